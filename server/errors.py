"""Errors as gRPC status codes, translated in one place.

Code below the servicers raises `ServiceError` with the status it means; the
`unary` / `streaming` wrappers turn it into a status with its sentence. Anything
else is a bug: it is logged with its traceback and the client gets INTERNAL with
no internals.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias, TypeVar

import grpc

from tandem.contract import OutOfRange

log = logging.getLogger(__name__)

# grpc.aio.ServicerContext; grpc ships no type information, so this is Any to mypy.
Context: TypeAlias = Any

Req = TypeVar("Req")
Resp = TypeVar("Resp")
T = TypeVar("T")
Self_ = TypeVar("Self_")


class ServiceError(Exception):
    """An error with the gRPC status that describes it, and a sentence for the user."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid_argument(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.NOT_FOUND, message)


def failed_precondition(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.FAILED_PRECONDITION, message)


def permission_denied(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.PERMISSION_DENIED, message)


def resource_exhausted(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.RESOURCE_EXHAUSTED, message)


# The status sentence travels percent-encoded in a trailer (up to 3 bytes per UTF-8
# byte), and clients refuse trailers over 8 KiB (some of them; all over 16 KiB) with
# RESOURCE_EXHAUSTED "Stream removed", which hides the real error. Sentences quote what
# the caller sent, so a 10,000 character id would do exactly that: the middle of a long
# sentence is cut out instead.
MAX_DETAILS_BYTES = 1024


def fit_details(message: str) -> str:
    """`message`, or its start and end with the middle cut when it is too long to send."""
    data = message.encode("utf-8")
    if len(data) <= MAX_DETAILS_BYTES:
        return message
    keep = (MAX_DETAILS_BYTES - 40) // 2
    head = data[:keep].decode("utf-8", errors="ignore")
    tail = data[-keep:].decode("utf-8", errors="ignore")
    return f"{head}...[{len(data) - 2 * keep} bytes cut]...{tail}"


async def _abort(context: Context, exc: Exception) -> None:
    if isinstance(exc, ServiceError):
        await context.abort(exc.code, fit_details(exc.message))
    log.exception("internal error in %s", context.peer() if hasattr(context, "peer") else "rpc")
    await context.abort(grpc.StatusCode.INTERNAL, "internal error; the server log has details")


def unary(
    method: Callable[[Self_, Req, Context], Awaitable[Resp]],
) -> Callable[[Self_, Req, Context], Awaitable[Resp]]:
    """Wraps a unary servicer method so its errors leave as status codes."""

    @functools.wraps(method)
    async def wrapper(self: Self_, request: Req, context: Context) -> Resp:
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _abort(context, exc)
            raise AssertionError("unreachable: abort raises") from exc

    return wrapper


def streaming(
    method: Callable[[Self_, Req, Context], AsyncIterator[Resp]],
) -> Callable[[Self_, Req, Context], AsyncIterator[Resp]]:
    """The same for server-streaming methods (async generators)."""

    @functools.wraps(method)
    async def wrapper(self: Self_, request: Req, context: Context) -> AsyncIterator[Resp]:
        try:
            async for item in method(self, request, context):
                yield item
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _abort(context, exc)

    return wrapper


def checked(check: Callable[[T], T], value: T) -> T:
    """`check(value)` from `tandem.contract`, its sentence (the one REST callers get
    too) sent as INVALID_ARGUMENT."""
    try:
        return check(value)
    except OutOfRange as exc:
        raise invalid_argument(str(exc)) from None
