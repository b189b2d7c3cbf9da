"""The CLI's connection to the server: base URL, API key, and errors turned into messages."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import click
import httpx

from trestle.settings import DEFAULT_PORT, default_home


def resolve_api_key(explicit: str | None) -> tuple[str | None, str]:
    """The key and where it came from: --api-key / TRESTLE_API_KEY, else the server's first key
    in TRESTLE_HOME/admin_key (on the server's machine)."""
    if explicit:
        return explicit, "--api-key / TRESTLE_API_KEY"
    path = default_home() / "admin_key"
    try:
        return path.read_text().strip() or None, str(path)
    except OSError:
        return None, str(path)


def no_key_message() -> str:
    return (f"no API key found: set TRESTLE_API_KEY or run on the server's machine "
            f"(TRESTLE_HOME={default_home()}; no admin_key there)")


@dataclass
class Client:
    url: str
    api_key: str | None
    key_source: str = ""

    @property
    def key_prefix(self) -> str | None:
        """The prefix of the key in use (`tr_{prefix}_...`), to recognise it in `keys list`."""
        parts = (self.api_key or "").split("_", 2)
        return parts[1] if len(parts) == 3 else None

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
        self.check(resp)
        return resp

    def check(self, resp: httpx.Response) -> None:
        """Nothing for a success; otherwise a ClickException with the server's message."""
        if resp.is_success:
            return
        if resp.status_code == 401 and not self.api_key:
            raise click.ClickException(no_key_message())
        try:
            error = resp.json()["error"]
            # the envelope, or Truss's `{"error": "..."}` on a model's Truss routes
            message = error if isinstance(error, str) else error["message"]
        except (ValueError, KeyError, TypeError):
            message = resp.text.strip() or resp.reason_phrase
        if resp.status_code == 401:
            message += f" (the key from {self.key_source})"
        raise click.ClickException(f"{resp.status_code}: {message}")


def default_url() -> str:
    return os.environ.get("TRESTLE_URL") or f"http://127.0.0.1:{DEFAULT_PORT}"


def read_data(data: str) -> bytes:
    """`-d '{"x": 1}'`, `-d @file.json` or `-d @-` (stdin)."""
    if data.startswith("@"):
        name = data[1:]
        return click.get_binary_stream("stdin").read() if name == "-" else Path(name).read_bytes()
    return data.encode()
