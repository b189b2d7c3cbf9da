"""A server started with `--no-auth`: the console opens directly, without signing in."""

from __future__ import annotations

import pytest

from support import start_server

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def open_server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("open"), "--no-auth", "--no-builtin",
                       "--no-builtin-embeddings")
    yield srv
    srv.stop()


def test_a_server_without_auth_opens_the_console_directly(open_server, page):
    page.goto(open_server.url + "/console/keys")
    page.get_by_text("auth off").wait_for()
    assert page.url == open_server.url + "/console/keys"
    page.get_by_role("table", name="API keys").wait_for()
    page.goto(open_server.url + "/console/signin?next=/console/metrics")
    page.wait_for_url(open_server.url + "/console/metrics")
    assert page.errors == []
