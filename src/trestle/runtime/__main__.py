"""`python -m trestle.runtime`: see `trestle.runtime.server`."""

import sys

from trestle.runtime.server import main

sys.exit(main())
