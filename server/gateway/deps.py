"""Request dependencies shared by the v1 and v2 routes: the per-request gRPC calls
(with the caller's `Authorization` forwarded) and the gateway's settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request

from server.gateway.backend import Backend, Rpc
from tandem.contract import MAX_MESSAGE_BYTES

# The gRPC server's message limit, less room for the other fields.
DEFAULT_MAX_UPLOAD_BYTES = MAX_MESSAGE_BYTES - 64 * 1024


@dataclass(frozen=True)
class Settings:
    """What the routes need besides the backend."""

    keep_alive_s: float = 15.0
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES


def backend(request: Request) -> Backend:
    found: Backend = request.app.state.backend
    return found


def settings(request: Request) -> Settings:
    found: Settings = request.app.state.settings
    return found


def _printable_ascii(text: str) -> bool:
    return all(" " <= ch <= "~" for ch in text)


def rpc(
    request: Request,
    authorization: Annotated[
        str | None,
        Header(
            description="Passed to the gRPC server as `authorization` metadata, unchanged "
            "(for example `Bearer <token>`). Printable ASCII. Default: none.",
        ),
    ] = None,
) -> Rpc:
    metadata: tuple[tuple[str, str], ...] = ()
    if authorization is not None:
        # gRPC metadata values must be printable ASCII; anything else could not be sent.
        if not _printable_ascii(authorization):
            raise HTTPException(400, "the Authorization header must be printable ASCII")
        metadata = (("authorization", authorization),)
    return Rpc(backend(request), metadata)


RpcDep = Annotated[Rpc, Depends(rpc)]
SettingsDep = Annotated[Settings, Depends(settings)]
