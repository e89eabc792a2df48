"""The exceptions the Python client raises: one per gRPC status a caller can act on.

    TandemError                 every error from this client
    ├── InvalidArgument         the request is wrong (INVALID_ARGUMENT, OUT_OF_RANGE)
    ├── NotFound                no such task, dataset or model (NOT_FOUND)
    ├── FailedPrecondition      not possible in the current state (FAILED_PRECONDITION)
    ├── ResourceExhausted       queue or capacity full; retry later (RESOURCE_EXHAUSTED)
    ├── Unauthenticated         missing or wrong token (UNAUTHENTICATED)
    ├── PermissionDenied        outside the allowed roots, or not allowed (PERMISSION_DENIED)
    ├── DeadlineExceeded        no answer in time (DEADLINE_EXCEEDED)
    ├── Unavailable             the server cannot be reached (UNAVAILABLE)
    ├── Cancelled               the call was cancelled (CANCELLED)
    └── ServerError             anything else (INTERNAL, UNKNOWN, UNIMPLEMENTED, ...)

gRPC errors are translated once, in `from_rpc_error`; the original is kept as
`__cause__` and its status code as `.code`.
"""

from __future__ import annotations

import grpc


class TandemError(Exception):
    """An error reported by (or on the way to) a Tandem server."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class InvalidArgument(TandemError):
    pass


class NotFound(TandemError):
    pass


class FailedPrecondition(TandemError):
    pass


class ResourceExhausted(TandemError):
    pass


class Unauthenticated(TandemError):
    pass


class PermissionDenied(TandemError):
    pass


class DeadlineExceeded(TandemError):
    pass


class Unavailable(TandemError):
    pass


class Cancelled(TandemError):
    pass


class ServerError(TandemError):
    pass


_BY_CODE: dict[grpc.StatusCode, type[TandemError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.CANCELLED: Cancelled,
}


def from_rpc_error(error: grpc.RpcError) -> TandemError:
    """The client exception for a gRPC error."""
    code = error.code() if hasattr(error, "code") else None
    details = error.details() if hasattr(error, "details") else None
    message = details or (code.name if code is not None else str(error))
    cls = _BY_CODE.get(code, ServerError) if code is not None else ServerError
    return cls(message, code)
