"""Errors of the REST gateway: the one mapping from gRPC status codes to HTTP statuses,
and the handlers that make every error `{"detail": "<sentence>"}`.

The gRPC server decides what is wrong with a request and says so with a status code and
a sentence; the gateway only chooses the HTTP status for that code, here and nowhere else.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from server.gateway.fields import OUT_OF_RANGE, UNKNOWN_FIELD
from server.gateway.responses import ErrorBody

log = logging.getLogger(__name__)

GRPC_TO_HTTP: Final[Mapping[grpc.StatusCode, int]] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    # The gateway's own channel is cancelled only when it shuts down: try again later.
    grpc.StatusCode.CANCELLED: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
# INTERNAL, UNKNOWN, DATA_LOSS: a fault in the service, not in the request.
DEFAULT_HTTP_STATUS: Final = 500

# Statuses every operation may answer, documented once for the OpenAPI document.
_DESCRIPTIONS: Final[Mapping[int, str]] = {
    400: "Bad request: a field the server refused (INVALID_ARGUMENT), or a malformed body.",
    401: "Not authenticated (UNAUTHENTICATED); send an `Authorization` header.",
    403: "Not allowed (PERMISSION_DENIED), for example a dataset outside the dataset roots.",
    404: "No such task, dataset, model file or device (NOT_FOUND).",
    409: "Not possible in the current state (FAILED_PRECONDITION), for example `cuda` on a "
    "machine without a GPU, or cancelling a task that has ended.",
    413: "The uploaded image is too large.",
    422: "The body or a parameter has the wrong type, is out of range or names an unknown field.",
    429: "Too many waiting tasks (RESOURCE_EXHAUSTED); retry later.",
    501: "Not implemented by this server (UNIMPLEMENTED).",
    503: "The gRPC server is unavailable or not serving.",
    504: "The gRPC call ran past its deadline (DEADLINE_EXCEEDED).",
}


def http_status(code: grpc.StatusCode) -> int:
    """The HTTP status for a gRPC status code."""
    return GRPC_TO_HTTP.get(code, DEFAULT_HTTP_STATUS)


def error_responses(*statuses: int, explicit_json: bool = False) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the given error statuses (all of them when none are given).

    `explicit_json`: name the media type rather than let FastAPI use the route's own, for
    routes whose success is not JSON (an event stream) while their errors are."""
    chosen: Sequence[int] = statuses or tuple(_DESCRIPTIONS)
    if explicit_json:
        content = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
        return {s: {"description": _DESCRIPTIONS[s], "content": content} for s in chosen}
    return {s: {"model": ErrorBody, "description": _DESCRIPTIONS[s]} for s in chosen}


def _headers_for(status: int) -> dict[str, str]:
    # RFC 9110: a 401 names its scheme; 429 and 503 say when to come back.
    if status == 401:
        return {"WWW-Authenticate": "Bearer"}
    if status in (429, 503):
        return {"Retry-After": "1"}
    return {}


def error_response(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=_headers_for(status))


def rpc_error_detail(error: grpc.RpcError, target: str) -> tuple[int, str]:
    """(HTTP status, sentence) for a failed gRPC call."""
    code = error.code() if callable(getattr(error, "code", None)) else grpc.StatusCode.UNKNOWN
    details = error.details() if callable(getattr(error, "details", None)) else None
    status = http_status(code)
    text = str(details or code.name.replace("_", " ").lower())
    if code is grpc.StatusCode.UNAVAILABLE:
        # The raw detail names sockets; say first which service is missing.
        text = f"the Tandem gRPC server at {target} is unavailable: {text}"
    elif status == DEFAULT_HTTP_STATUS:
        log.error("gRPC call failed with %s: %s", code.name, text)
    return status, text


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        kind, ctx = error.get("type"), error.get("ctx") or {}
        if kind == "json_invalid":
            parts.append(f"the body is not valid JSON: {ctx.get('error', 'malformed')}")
            continue
        if kind == OUT_OF_RANGE:  # the gRPC server's sentence, which names the field
            parts.append(str(ctx["sentence"]))
            continue
        if kind == UNKNOWN_FIELD:
            place = ".".join(str(p) for p in error.get("loc", ())[1:]) or "the body"
            parts.append(
                f"unknown {ctx['unknown']} in {place}; the known fields are {ctx['known']}"
            )
            continue
        where = ".".join(str(p) for p in error.get("loc", ()))
        parts.append(f"{where}: {error.get('msg', 'invalid')}" if where else error.get("msg", ""))
    return "; ".join(parts) or "the request is not valid"


_METHODS: Final = frozenset({"delete", "get", "head", "options", "patch", "post", "put"})


@functools.lru_cache(maxsize=256)
def _template(path: str) -> re.Pattern[str]:
    """An OpenAPI path template (`/api/v2/models/{name}`) as a pattern of the paths it
    stands for."""
    parts = re.split(r"\{[^}/]+\}", path)
    return re.compile("[^/]+".join(re.escape(part) for part in parts))


def _allowed_methods(request: Request) -> str | None:
    """The methods the OpenAPI document gives the request's path (the most specific of
    the templates it fits, as routing prefers `/models/export` to `/models/{name}`), or
    None for a path it does not document. Starlette's own 405 names only the methods of
    the first route of the path, and a path may have one route per method (`PUT` and
    `DELETE` of an alias)."""
    paths: dict[str, dict[str, Any]] = request.app.openapi().get("paths", {})
    fits = [(t.count("{"), t) for t in paths if _template(t).fullmatch(request.url.path)]
    if not fits:
        return None
    _, template = min(fits)
    return ", ".join(sorted(m.upper() for m in paths[template] if m in _METHODS))


def install(app: FastAPI, target: str) -> None:
    """Makes every error of `app` an `ErrorBody` with the status the mapping gives."""

    async def on_rpc_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, grpc.RpcError)
        status, text = rpc_error_detail(exc, target)
        return error_response(status, text)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(422, _validation_detail(exc))

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        response = error_response(exc.status_code, str(exc.detail))
        response.headers.update(exc.headers or {})
        allowed = _allowed_methods(request) if exc.status_code == 405 else None
        if allowed:
            response.headers["Allow"] = allowed
        return response

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug in the gateway: logged with its traceback, answered without internals.
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal error in the REST gateway; see its log")

    app.add_exception_handler(Exception, on_unexpected)
    app.add_exception_handler(grpc.RpcError, on_rpc_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(HTTPException, on_http_error)
