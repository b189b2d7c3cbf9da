"""The web console: pages served by `trestle serve` at `/` and `/console/...`.

The pages are Jinja2 shells with no data in them; Alpine.js (declarative markup) fetches
everything from the management API (`/api/v1/...`), the dataset and prompt-endpoint APIs and
the data plane, with the API key the user signed in with (kept in the tab's sessionStorage),
exactly as the CLI does. Chart.js draws the metrics and usage charts. Both come from npm
(`package.json`, `package-lock.json`); `scripts/install` copies their built files into
`vendor/`, which ships in the wheel.
"""
