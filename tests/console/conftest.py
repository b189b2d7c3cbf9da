"""Browser fixtures: Playwright for Python driving Debian's Chromium (`/usr/bin/chromium`,
headless; Playwright's own browser builds are never downloaded).

Tests here are marked `browser` and run in the default suite; they are skipped where Chromium
or Playwright is missing. When a test fails, a screenshot of its page is saved under the
session's temporary directory (`console-artifacts/`, or `$TRESTLE_TEST_ARTIFACTS`), and its
path is printed in the report.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
TIMEOUT_MS = 120_000  # generous: the machine is shared; waits end as soon as the page is ready


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


# Package-scoped, not session: Playwright's sync API runs an event loop in this thread until it is
# closed, and every asyncio test that comes after the browser tests needs that loop gone.
@pytest.fixture(scope="package")
def chromium():
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> Path:
    where = os.environ.get("TRESTLE_TEST_ARTIFACTS")
    path = Path(where) if where else tmp_path_factory.getbasetemp() / "console-artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path


def open_page(chromium, request, artifacts: Path, **context_args) -> Iterator:
    """A page in a fresh browser context (its own sessionStorage); a screenshot if the test failed."""
    context = chromium.new_context(**{"viewport": {"width": 1280, "height": 900}, **context_args})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors
    yield page
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)[-150:]
        shot = artifacts / f"{name}.png"
        try:
            page.screenshot(path=str(shot), full_page=True)
            print(f"\nscreenshot of the failed page: {shot}\nits script errors: {errors}")
        except Exception as exc:  # the page may be gone; the failure is reported anyway
            print(f"\nno screenshot ({exc})")
    context.close()


@pytest.fixture
def page(chromium, request, artifacts):
    yield from open_page(chromium, request, artifacts)

