"""Bodies of the Truss routes: JSON by default, msgpack as Truss sends it.

A request whose `Content-Type` is `application/octet-stream` carries msgpack; any other body is
JSON (an empty body is `{}`). The answer is msgpack when the request's `Accept` is
`application/octet-stream`, JSON otherwise. A generator's stream asked for with
`Accept: application/json` (and no `text/event-stream`, `*/*` or other type beside it) is gathered
into one JSON string, as Truss does: the text the stream would have sent.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel
from starlette.responses import Response

from trestle import pydantic_compat
from trestle.errors import BadRequest, TrestleError

MSGPACK = "application/octet-stream"
JSON = "application/json"


def _media_types(header: str) -> list[str]:
    return [part.split(";")[0].strip().lower() for part in header.split(",") if part.strip()]


def is_msgpack(content_type: str) -> bool:
    return _media_types(content_type)[:1] == [MSGPACK]


def wants_msgpack(accept: str) -> bool:
    return _media_types(accept)[:1] == [MSGPACK]


def wants_gathered(accept: str) -> bool:
    """Whether a stream should be gathered into one JSON answer."""
    return _media_types(accept) == [JSON]


def read_input(content_type: str, body: bytes) -> Any:
    """The request body, decoded by its content type."""
    if is_msgpack(content_type):
        import msgpack

        try:
            return msgpack.unpackb(body, raw=False)
        except Exception as exc:  # msgpack raises several kinds (ExtraData, ValueError, ...)
            raise BadRequest(f"request body is not valid msgpack: {type(exc).__name__}",
                             code="invalid_msgpack") from None
    if not body.strip():
        return {}
    try:
        return json.loads(body)
    except ValueError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}", code="invalid_json") from None
    except RecursionError:
        raise BadRequest("request body is nested too deeply", code="invalid_json") from None


def output_response(value: Any, method: str, *, msgpack_out: bool) -> Response:
    """What a method returned (not a stream, not a Response), as JSON or msgpack."""
    if isinstance(value, BaseModel):
        value = pydantic_compat.dump(value)
    try:
        if msgpack_out:
            import msgpack

            return Response(msgpack.packb(value), media_type=MSGPACK)
        return Response(pydantic_compat.to_json(value), media_type=JSON)
    except (TypeError, ValueError, OverflowError):
        kind = "msgpack" if msgpack_out else "JSON"
        raise TrestleError(
            f"Model.{method} returned a {type(value).__name__}, which cannot be sent as {kind}; "
            "return a dict, list, str, number, pydantic model or a starlette Response"
        ) from None
