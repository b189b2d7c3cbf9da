"""Secrets handed to the worker: read once from a file that is then deleted.

The supervisor writes the deployment's secrets to a JSON file (`{name: value}`) readable only
by the worker and passes `--secrets-file`; `read_secrets_file` reads it and removes it, so the
values live only in the worker's memory. The model sees them as `Secrets`, a read-only mapping
whose missing keys raise a `KeyError` that says how to set them. Neither ever logs a value.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path


class SecretsFileError(Exception):
    """The secrets file is missing or not a JSON object of strings."""


class MissingSecret(KeyError):
    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class Secrets(Mapping[str, str]):
    """A read-only `{name: value}` mapping; `repr()` shows names only."""

    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        self._values = dict(values or {})

    def __getitem__(self, name: str) -> str:
        try:
            return self._values[name]
        except KeyError:
            raise MissingSecret(
                f"secret {name!r} is not set for this deployment; "
                f"set it with `trestle secrets set {name}` and deploy again"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Secrets(names={sorted(self._values)})"


def read_secrets_file(path: str | os.PathLike) -> Secrets:
    """Read `{name: value}` from `path`, then delete the file (also when it is invalid)."""
    path = Path(path)
    try:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise SecretsFileError(f"secrets file {path} does not exist") from None
        except (OSError, ValueError) as exc:
            raise SecretsFileError(f"secrets file {path} is not readable JSON: {type(exc).__name__}") from None
    finally:
        path.unlink(missing_ok=True)
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise SecretsFileError(f"secrets file {path} must be a JSON object of string values")
    return Secrets(data)
