"""A request id for every request: honoured from `x-request-id` or generated, echoed back, and put
in every log line written while the request is handled (via a contextvar and a logging filter)."""

from __future__ import annotations

import contextvars
import logging
import re
import uuid

HEADER = "x-request-id"
_VALID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

current: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


def from_headers(value: str | None) -> str:
    """The client's id when it is sane, else a fresh one."""
    if value and _VALID.match(value):
        return value
    return uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current.get()
        return True


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


def configure_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
