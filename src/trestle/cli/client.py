"""The CLI's connection to the server: base URL, API key, and errors turned into messages."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import click
import httpx

from trestle.settings import DEFAULT_PORT, default_home


def resolve_api_key(explicit: str | None) -> str | None:
    """--api-key / TRESTLE_API_KEY, else the server's first key in TRESTLE_HOME/admin_key."""
    if explicit:
        return explicit
    path = default_home() / "admin_key"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


@dataclass
class Client:
    url: str
    api_key: str | None

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Api-Key {self.api_key}"} if self.api_key else {}

    def http(self, timeout: float | None = 60.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self._headers(), timeout=timeout)

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        try:
            with self.http() as http:
                resp = http.request(method, path, **kwargs)
        except httpx.ConnectError:
            raise click.ClickException(
                f"cannot reach trestle at {self.url}: is `trestle serve` running? (--url / TRESTLE_URL)"
            ) from None
        check(resp)
        return resp


def check(resp: httpx.Response) -> None:
    if resp.is_success:
        return
    try:
        message = resp.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = resp.text.strip() or resp.reason_phrase
    raise click.ClickException(f"{resp.status_code}: {message}")


def default_url() -> str:
    return os.environ.get("TRESTLE_URL") or f"http://127.0.0.1:{DEFAULT_PORT}"


def read_data(data: str) -> bytes:
    """`-d '{"x": 1}'`, `-d @file.json` or `-d @-` (stdin)."""
    if data.startswith("@"):
        name = data[1:]
        return click.get_binary_stream("stdin").read() if name == "-" else Path(name).read_bytes()
    return data.encode()
