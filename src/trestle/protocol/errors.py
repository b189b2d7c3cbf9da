"""The error envelope used on every endpoint: `{"error": {"message", "type", "param", "code"}}`.

It is the OpenAI envelope, so `/v1/*` clients (the official `openai` package included) parse it,
and the rest of the API uses the same shape so that there is one error format to learn.
On prompt-endpoint calls (`/api/endpoints/...`) the body also carries the message at the top,
`{"message": ..., "error": {...}}`, where that API's clients read it (`error_response_for`).
"""

from __future__ import annotations

import http
import json

from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.requests import Request
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
    return JSONResponse(error_body(exc), status_code=exc.status_code,
                        headers=headers if headers is not None else exc.headers)


PROMPT_ENDPOINTS = "/api/endpoints/"


def error_response_for(path: str, exc: TrestleError, headers: dict[str, str] | None = None) -> JSONResponse:
    """`error_response`, with the top-level `message` on prompt-endpoint calls."""
    if not path.startswith(PROMPT_ENDPOINTS):
        return error_response(exc, headers)
    return JSONResponse({"message": exc.message, **error_body(exc)}, status_code=exc.status_code,
                        headers=headers if headers is not None else exc.headers)


_TYPE_BY_STATUS = {cls.status_code: cls.type for cls in TrestleError.__subclasses__()}


def http_exception_response(request: Request, exc: Exception) -> JSONResponse:
    """An `HTTPException` (Starlette's own 404/405, or one raised by model code) as the envelope.

    A 404 from the router itself (no route matched, so the scope has no `endpoint`) and a 405
    say which path and method; an exception raised by code keeps its status, detail and headers.
    """
    assert isinstance(exc, HTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail, default=str)
    if exc.status_code == 404 and "endpoint" not in request.scope:
        detail = f"no route {request.url.path}"
    elif exc.status_code == 405:
        detail = f"method {request.method} is not allowed on {request.url.path}"
    default_type = "invalid_request_error" if exc.status_code < 500 else "server_error"
    body = ErrorResponse(error=ErrorBody(
        message=detail or http.HTTPStatus(exc.status_code).phrase,
        type=_TYPE_BY_STATUS.get(exc.status_code, default_type),
    ))
    return JSONResponse(body.model_dump(), status_code=exc.status_code, headers=exc.headers)


def exception_handlers(component: str) -> dict:
    """Starlette exception handlers that answer every error of an app with the envelope.

    An unexpected exception is a bug of ours: the client gets a generic 500 and Starlette
    re-raises it after the handler, so the server logs the traceback once.
    """

    def trestle_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, TrestleError)
        return error_response(exc)

    def unexpected(request: Request, exc: Exception) -> JSONResponse:
        return error_response(TrestleError(f"internal error in the {component}; see its log"))

    return {TrestleError: trestle_error, HTTPException: http_exception_response, Exception: unexpected}
