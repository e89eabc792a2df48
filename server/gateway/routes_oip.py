"""The Open Inference Protocol's REST routes (`/v2/...`), each one call on the gRPC
`inference.GRPCInferenceService` (bodies: `oip_json.py`).

Errors are the protocol's `{"error": "<sentence>"}`, with the HTTP status the gateway
gives the gRPC code everywhere else (`errors.http_status`). A probe that answers "no"
(server or model not ready) is an error status too, as the protocol's clients read the
status alone. The routes stay out of the OpenAPI document: the protocol publishes its
own, and a body of JSON and binary data cannot be described in it.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, Response

from server.gateway import deps
from server.gateway.backend import Backend
from server.gateway.errors import rpc_error_detail
from server.gateway.oip_json import (
    BINARY_HEADER,
    BodyError,
    infer_request,
    infer_response,
    metadata_document,
)
from tandem.inference import open_inference_pb2 as oip

Endpoint = Callable[..., Awaitable[Response]]


def error(status: int, sentence: str, **fields: Any) -> JSONResponse:
    headers = {"Retry-After": "1"} if status in (429, 503) else {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse({**fields, "error": sentence}, status_code=status, headers=headers)


def _protocol_errors(endpoint: Endpoint) -> Endpoint:
    """Answers a failed call, a refused body or a bad header as `{"error": ...}`."""

    @functools.wraps(endpoint)
    async def wrapper(*args: Any, **kwargs: Any) -> Response:
        request: Request = kwargs["request"]
        try:
            return await endpoint(*args, **kwargs)
        except grpc.RpcError as exc:
            backend: Backend = request.app.state.backend
            return error(*rpc_error_detail(exc, backend.target))
        except BodyError as exc:
            return error(400, str(exc))
        except HTTPException as exc:  # deps.rpc's refusal of an Authorization header
            return error(exc.status_code, str(exc.detail))

    return wrapper


def _call(request: Request) -> tuple[Any, dict[str, Any], Backend]:
    """The protocol's stub, the call options carrying the caller's credentials, and the
    backend (for its timeouts)."""
    rpc = deps.rpc(request, request.headers.get("authorization"))
    return rpc.backend.open_inference, {"metadata": rpc.metadata}, rpc.backend


@_protocol_errors
async def server_live(request: Request) -> Response:
    stub, options, backend = _call(request)
    answer = await stub.ServerLive(
        oip.ServerLiveRequest(), timeout=backend.timeouts.health_s, **options
    )
    if not answer.live:
        return error(503, "the server is not live", live=False)
    return JSONResponse({"live": True})


@_protocol_errors
async def server_ready(request: Request) -> Response:
    stub, options, backend = _call(request)
    answer = await stub.ServerReady(
        oip.ServerReadyRequest(), timeout=backend.timeouts.health_s, **options
    )
    if not answer.ready:
        return error(503, "the server is not ready: it is shutting down", ready=False)
    return JSONResponse({"ready": True})


@_protocol_errors
async def server_metadata(request: Request) -> Response:
    stub, options, backend = _call(request)
    answer = await stub.ServerMetadata(
        oip.ServerMetadataRequest(), timeout=backend.timeouts.unary_s, **options
    )
    return JSONResponse(
        {"name": answer.name, "version": answer.version, "extensions": list(answer.extensions)}
    )


@_protocol_errors
async def model_metadata(request: Request, name: str, version: str = "") -> Response:
    stub, options, backend = _call(request)
    answer = await stub.ModelMetadata(
        oip.ModelMetadataRequest(name=name, version=version),
        timeout=backend.timeouts.unary_s,
        **options,
    )
    return JSONResponse(metadata_document(answer))


@_protocol_errors
async def model_ready(request: Request, name: str, version: str = "") -> Response:
    stub, options, backend = _call(request)
    answer = await stub.ModelReady(
        oip.ModelReadyRequest(name=name, version=version),
        timeout=backend.timeouts.unary_s,
        **options,
    )
    if not answer.ready:
        which = f"model {name!r}" + (f" version {version!r}" if version else "")
        sentence = f"{which} is not ready: the registry has no such model, or its file is gone"
        return error(400, sentence, name=name, ready=False)
    return JSONResponse({"name": name, "ready": True})


@_protocol_errors
async def model_infer(request: Request, name: str, version: str = "") -> Response:
    if request.headers.get("content-encoding", "identity").lower() != "identity":
        raise BodyError("a compressed request body is not supported; send it uncompressed")
    stub, options, backend = _call(request)
    call = infer_request(await request.body(), request.headers.get(BINARY_HEADER), name, version)
    answer = await stub.ModelInfer(call.request, timeout=backend.timeouts.predict_s, **options)
    body, header_length = infer_response(answer, call)
    if header_length is None:
        return Response(body, media_type="application/json")
    return Response(
        body,
        media_type="application/octet-stream",
        headers={BINARY_HEADER: str(header_length)},
    )


def _add(router: APIRouter, path: str, endpoint: Endpoint, method: str = "GET") -> None:
    router.add_api_route(path, endpoint, methods=[method], include_in_schema=False)


def create_router() -> APIRouter:
    """The protocol's routes, at its own paths (`/v2/...`)."""
    router = APIRouter()
    _add(router, "/v2/health/live", server_live)
    _add(router, "/v2/health/ready", server_ready)
    _add(router, "/v2", server_metadata)
    for model in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        _add(router, model, model_metadata)
        _add(router, f"{model}/ready", model_ready)
        _add(router, f"{model}/infer", model_infer, "POST")
    return router
