"""Token authentication for the gRPC API: `authorization: Bearer <token>` metadata.

With a token configured every RPC needs it, except the probes that load balancers and
orchestrators must reach without credentials: the standard health service, and the
Open Inference Protocol's ServerLive and ServerReady (its metadata and inference need
the token). A missing or wrong
token is UNAUTHENTICATED; the comparison takes the same time whatever the token.
The REST gateway forwards the HTTP `Authorization` header, so REST is covered too.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

OPEN_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/inference.GRPCInferenceService/ServerLive",
    "/inference.GRPCInferenceService/ServerReady",
)


def bearer_matches(header: str | None, token: str) -> bool:
    if not header:
        return False
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token)


class TokenAuth(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses calls without the configured bearer token."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(details)
        if handler is None or details.method.startswith(OPEN_PREFIXES):
            return handler
        metadata = dict(details.invocation_metadata or ())
        if bearer_matches(metadata.get("authorization"), self._token):
            return handler
        return _denying(handler)


_MESSAGE = "missing or wrong token: send the metadata 'authorization: Bearer <token>'"


def _denying(handler: Any) -> Any:
    """A handler of the same shape as `handler` that answers UNAUTHENTICATED."""

    async def deny(request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, _MESSAGE)

    async def deny_stream(request: Any, context: Any) -> AsyncIterator[Any]:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, _MESSAGE)
        yield  # pragma: no cover - abort raises; this makes it an async generator

    codecs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(deny, **codecs)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(deny_stream, **codecs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(deny, **codecs)
    return grpc.stream_stream_rpc_method_handler(deny_stream, **codecs)
