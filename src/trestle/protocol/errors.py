"""The two error shapes on the wire.

- The envelope, `{"error": {"message", "type", "param", "code"}}`: the OpenAI one, so `/v1/*`
  clients (the official `openai` package included) parse it; the management API and the other
  trestle routes use it too.
- Truss's shape on the Truss routes (a model's `/predict` and its other routes, directly on a
  worker or under `/model/...`, but not its OpenAI routes): `{"error": "<message>"}` with two
  headers, `x-baseten-error-source` (`04` when the worker answered, `01` when the gateway did)
  and `x-baseten-error-code` (`700` the client's error, `600` the model's code failed, `500`
  trestle's own failure). `error_for(path, exc)` picks the shape for a path.
- On prompt-endpoint calls (`/api/endpoints/...`) the envelope also carries the message at the
  top, `{"message": ..., "error": {...}}`, where that API's clients read it.
"""

from __future__ import annotations

import http
import json
import re

from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from trestle.errors import TrestleError
from trestle.pydantic_compat import dump


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class TrussErrorResponse(BaseModel):
    error: str


SOURCE_HEADER = "x-baseten-error-source"
CODE_HEADER = "x-baseten-error-code"
WORKER_SOURCE = "04"  # Truss's id for its model server
GATEWAY_SOURCE = "01"  # Truss's id for the edge in front of it
CLIENT_ERROR, MODEL_ERROR, INTERNAL_ERROR = "700", "600", "500"
# /model/{id}/{target}/{rest}: `rest` is what the worker is asked for
_MODEL_PATH = re.compile(r"^/model/[^/]+/(?:environments/[^/]+|deployment/[^/]+|production|"
                         r"development)/(?P<rest>.*)$")


def error_body(exc: TrestleError) -> dict:
    return dump(ErrorResponse(
        error=ErrorBody(message=exc.message, type=exc.type, param=exc.param, code=exc.code)))


def openai_route(worker_path: str) -> bool:
    """Whether a worker path is one of the OpenAI routes (envelope errors), not a Truss route."""
    return worker_path.startswith("/v1/") and not worker_path.startswith("/v1/models/")


def truss_route(path: str, *, worker: bool) -> bool:
    """Whether errors on `path` take Truss's shape: any worker path but the OpenAI ones, and on
    the gateway, `/model/...` paths that reach one."""
    if worker:
        return path != "/health" and not openai_route(path)
    match = _MODEL_PATH.match(path)
    if match is None:
        return False
    rest = match["rest"]
    return not (rest.startswith("sync/") and openai_route(rest[len("sync"):]))


def truss_code(exc: TrestleError) -> str:
    code = getattr(exc, "truss_code", None)
    if code is not None:
        return code
    return CLIENT_ERROR if exc.status_code < 500 else INTERNAL_ERROR


def truss_error_response(exc: TrestleError, source: str = WORKER_SOURCE) -> JSONResponse:
    headers = {**(exc.headers or {}), SOURCE_HEADER: source, CODE_HEADER: truss_code(exc)}
    return JSONResponse(dump(TrussErrorResponse(error=exc.message)), status_code=exc.status_code,
                        headers=headers)


# prompt endpoints and datastores: their clients read a top-level `message` (seed 002's API)
MESSAGE_ROUTES = ("/api/endpoints/", "/api/datasets")
ANTHROPIC_ROUTES = frozenset({"/v1/messages", "/v1/messages/count_tokens"})


def error_for(path: str, exc: TrestleError, *, worker: bool) -> JSONResponse:
    """The response for `exc` on `path`, in the shape of that route."""
    if truss_route(path, worker=worker):
        return truss_error_response(exc, WORKER_SOURCE if worker else GATEWAY_SOURCE)
    if path in ANTHROPIC_ROUTES:
        from trestle.protocol import anthropic  # (it builds on the OpenAI wire types, which use this)
        return anthropic.error_response(exc, exc.headers)
    if path.startswith(MESSAGE_ROUTES):
        return JSONResponse({"message": exc.message, **error_body(exc)}, status_code=exc.status_code,
                            headers=exc.headers)
    return error_response(exc)


def envelope_from_truss(status: int, body: bytes) -> bytes | None:
    """A worker's Truss-shaped error body as the envelope (for a route that answers in the
    OpenAI shapes with what `/predict` said: the legacy bridge); None if it is not one."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not (isinstance(data, dict) and isinstance(data.get("error"), str)):
        return None
    default_type = "invalid_request_error" if status < 500 else "server_error"
    envelope = ErrorResponse(error=ErrorBody(message=data["error"],
                                             type=_TYPE_BY_STATUS.get(status, default_type)))
    return json.dumps(dump(envelope)).encode()


def error_response(exc: TrestleError, headers: dict[str, str] | None = None) -> JSONResponse:
    """The response for `exc`, as an ASGI app."""
    return JSONResponse(error_body(exc), status_code=exc.status_code,
                        headers=headers if headers is not None else exc.headers)


_TYPE_BY_STATUS = {cls.status_code: cls.type for cls in TrestleError.__subclasses__()}


def http_exception_response(request: Request, exc: Exception, *, truss: bool = False) -> JSONResponse:
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
    if truss:  # Truss marks an HTTPException a model raised as the client's error
        headers = {**(exc.headers or {}), SOURCE_HEADER: WORKER_SOURCE, CODE_HEADER: CLIENT_ERROR}
        message = detail or http.HTTPStatus(exc.status_code).phrase
        return JSONResponse(dump(TrussErrorResponse(error=message)), status_code=exc.status_code,
                            headers=headers)
    default_type = "invalid_request_error" if exc.status_code < 500 else "server_error"
    body = ErrorResponse(error=ErrorBody(
        message=detail or http.HTTPStatus(exc.status_code).phrase,
        type=_TYPE_BY_STATUS.get(exc.status_code, default_type),
    ))
    return JSONResponse(dump(body), status_code=exc.status_code, headers=exc.headers)


def exception_handlers(component: str, *, truss_routes: bool = False) -> dict:
    """Starlette exception handlers that answer every error of an app with the envelope (or, with
    `truss_routes`, on a model worker, in Truss's shape on its Truss routes).

    An unexpected exception is a bug of ours: the client gets a generic 500 and Starlette
    re-raises it after the handler, so the server logs the traceback once.
    """

    def shaped(request: Request, exc: TrestleError) -> JSONResponse:
        if truss_routes:
            return error_for(request.url.path, exc, worker=True)
        return error_response(exc)

    def trestle_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, TrestleError)
        return shaped(request, exc)

    def http_error(request: Request, exc: Exception) -> JSONResponse:
        truss = truss_routes and truss_route(request.url.path, worker=True)
        return http_exception_response(request, exc, truss=truss)

    def unexpected(request: Request, exc: Exception) -> JSONResponse:
        return shaped(request, TrestleError(f"internal error in the {component}; see its log"))

    return {TrestleError: trestle_error, HTTPException: http_error, Exception: unexpected}
