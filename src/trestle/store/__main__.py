"""`python -m trestle.store upgrade URL` / `python -m trestle.store revision URL -m MESSAGE`."""

from trestle.store.migrate import main

main()
