"""Assembly of the REST gateway: `create_gateway(grpc_target)` builds the FastAPI app that
serves the v1 and v2 REST APIs by calling the Tandem gRPC server at `grpc_target`.

The app holds one gRPC channel and nothing else; run it with any ASGI server (`tandem
serve` runs it with uvicorn beside the gRPC server).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from server import dashboard
from server.gateway import docs, errors, routes_oip, routes_v1, routes_v2
from server.gateway.backend import Backend, Timeouts
from server.gateway.body_limit import BodyLimit
from server.gateway.deps import DEFAULT_MAX_UPLOAD_BYTES, Settings

DESCRIPTION = """\
REST access to Tandem, the service that trains and serves PyTorch image classifiers on
shared GPUs and CPUs. A thin gateway: every call is a call on the `tandem.v1` gRPC API.

* **v1** (`/api/v1`): the standard service's API: train, batch inference, task status,
  live logs (server-sent events), health.
* **v2** (`/api/v2`): all of v1, plus `priority`, `task_id` on inference, the task list,
  cancel, resources and run-time limits, online prediction from an uploaded image, and
  model export to ONNX or TorchScript.
* **Open Inference Protocol** (`/v2/...`, KServe v2): health, metadata and inference for
  the model registry's models, as tritonclient and KServe's clients call them; not in
  this document (the protocol publishes its own), errors `{"error": "<sentence>"}`.

Errors are `{"detail": "<sentence>"}` with the status of the gRPC error: 400 bad field,
401 unauthenticated, 403 denied, 404 not found, 409 wrong state (for example `cuda` on a
machine without a GPU), 422 wrong type, 429 queue full, 503 gRPC server unavailable,
504 deadline passed. An `Authorization` header is forwarded to the gRPC server.
"""
TAGS = [
    {"name": "v1", "description": "The standard (v2.1) service's API, kept unchanged."},
    {"name": "v2", "description": "The concurrent (v2.2) service's API: v1 plus resources."},
]


_MULTIPART_OVERHEAD_BYTES = 64 * 1024


def create_gateway(
    grpc_target: str,
    *,
    timeouts: Timeouts | None = None,
    keep_alive_s: float = 15.0,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
) -> FastAPI:
    """The REST gateway for the gRPC server at `grpc_target` (`host:port`).

    `timeouts`: deadlines of its gRPC calls; `keep_alive_s`: seconds of silence before a
    log stream sends a keep-alive comment; `max_upload_bytes`: largest image `predict` takes.
    """
    backend = Backend(grpc_target, timeouts or Timeouts())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await backend.close()

    app = FastAPI(
        title="Tandem REST gateway",
        version="2.2",
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
        # Served by `docs.install` from local files: the defaults load from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.backend = backend
    app.state.settings = Settings(keep_alive_s=keep_alive_s, max_upload_bytes=max_upload_bytes)
    errors.install(app, grpc_target)
    # Room for the largest image plus the multipart envelope around it.
    app.add_middleware(BodyLimit, max_bytes=max_upload_bytes + _MULTIPART_OVERHEAD_BYTES)
    app.include_router(routes_v1.router)
    app.include_router(routes_v2.router)
    # The Open Inference Protocol (KServe v2) at its own paths, for tritonclient and
    # KServe's clients.
    app.include_router(routes_oip.create_router())
    docs.install(app)
    # The dashboard at `/`: static files that call the routes above like any client.
    dashboard.install(app)
    return app


def drain(app: FastAPI) -> None:
    """Ends the open log streams of a gateway `app` (each with a last `event: error`, status
    503, so an EventSource reconnects and resumes), so that stopping it does not wait for
    running tasks to finish. Call it before the ASGI server's shutdown; `GatewayServer.stop`
    does."""
    backend: Backend = app.state.backend
    backend.closing.set()
