from trestle.cli.main import main

main()
