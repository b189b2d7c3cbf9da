"""The error envelope used on every endpoint: `{"error": {"message", "type", "param", "code"}}`.

It is the OpenAI envelope, so `/v1/*` clients (the official `openai` package included) parse it,
and the rest of the API uses the same shape so that there is one error format to learn.
"""

from __future__ import annotations

from pydantic import BaseModel
from starlette.responses import JSONResponse

from trestle.errors import TrestleError


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


def error_body(exc: TrestleError) -> dict:
    return ErrorResponse(
        error=ErrorBody(message=exc.message, type=exc.type, param=exc.param, code=exc.code)
    ).model_dump()


def error_response(exc: TrestleError, headers: dict[str, str] | None = None) -> JSONResponse:
    """The response for `exc`, as an ASGI app."""
    return JSONResponse(error_body(exc), status_code=exc.status_code, headers=headers)
