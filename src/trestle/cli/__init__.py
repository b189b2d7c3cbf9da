"""The `trestle` command line. It talks to a running `trestle serve` over the management API."""
