"""The one error tree of trestle. Every error a client can see is one of these.

    TrestleError                500  something went wrong on our side
     +-- BadRequest             400  the request is malformed; `param` names the field
     +-- Unauthorized           401  no or bad credentials
     +-- NotFound               404  no such model, deployment, route or method
     +-- Conflict               409  the request clashes with current state
     +-- PayloadTooLarge        413  a request or upload is over a size limit; the message names it
     +-- TooManyRequests        429  a queue is full; retry later
     +-- NotImplementedYet      501  a recognised feature that trestle does not serve yet
     +-- Unavailable            503  the target exists but cannot serve now (loading, failed, draining)
     +-- UpstreamError          502  a worker answered badly or went away
          +-- UpstreamTimeout    504  a worker did not answer within its deployment's timeout

Foreign errors are mapped to this tree at the boundary where they enter (see
`trestle.deploy.transport` for upstream HTTP errors). The wire envelope for all of them is
`trestle.protocol.errors.ErrorResponse`.
"""

from __future__ import annotations


class TrestleError(Exception):
    status_code = 500
    type = "server_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class BadRequest(TrestleError):
    status_code = 400
    type = "invalid_request_error"


class Unauthorized(TrestleError):
    status_code = 401
    type = "authentication_error"


class NotFound(TrestleError):
    status_code = 404
    type = "not_found_error"


class Conflict(TrestleError):
    status_code = 409
    type = "conflict_error"


class PayloadTooLarge(TrestleError):
    status_code = 413
    type = "request_too_large"


class TooManyRequests(TrestleError):
    status_code = 429
    type = "rate_limit_error"


class NotImplementedYet(TrestleError):
    status_code = 501
    type = "not_implemented_error"


class UpstreamError(TrestleError):
    status_code = 502
    type = "upstream_error"


class Unavailable(TrestleError):
    status_code = 503
    type = "service_unavailable_error"


class UpstreamTimeout(UpstreamError):
    status_code = 504
    type = "timeout_error"
