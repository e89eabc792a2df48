"""Running the gateway with uvicorn inside an asyncio program (`tandem serve`, the tests):
on the caller's event loop, beside the gRPC server, stopped by the caller.

The socket is bound before uvicorn starts, so a taken port is an `OSError` at once (uvicorn
would `sys.exit` from inside its task) and port 0 reports the port it got.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from server.gateway.app import drain

# Open event streams get this long to end at shutdown before they are cut.
DEFAULT_GRACE_S = 5


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to `host:port` (0: any free port) and listening.

    The protocol is named explicitly: asyncio turns Nagle off (TCP_NODELAY) only for
    sockets whose `proto` is IPPROTO_TCP, and a socket made with proto 0 costs every
    keep-alive request a 40 ms delayed-ACK stall."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    return sock


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The host program owns SIGINT/SIGTERM and calls `stop`; uvicorn must not take them.
        yield


class GatewayServer:
    """`app` served by uvicorn on `host:port`; `start` and `stop` on the same event loop."""

    def __init__(
        self,
        app: FastAPI,
        host: str,
        port: int,
        *,
        grace_s: int = DEFAULT_GRACE_S,
        log_level: str = "warning",
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
    ) -> None:
        self.app = app
        self.socket = listening_socket(host, port)
        self.host = host
        self.port: int = self.socket.getsockname()[1]
        self.tls = tls_cert is not None
        config = uvicorn.Config(
            app,
            lifespan="on",
            # The host program's logging (text or JSON) formats uvicorn's records too.
            log_config=None,
            log_level=log_level,
            timeout_graceful_shutdown=grace_s,
            ssl_certfile=tls_cert,
            ssl_keyfile=tls_key,
        )
        # Now rather than inside uvicorn's task: an unusable certificate or key is an
        # OSError (ssl.SSLError) at start, like a taken port.
        try:
            config.load()
        except OSError:
            self.socket.close()
            raise
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{host}:{self.port}"

    def start(self) -> None:
        """Starts serving in a task of the running loop; requests already wait in the backlog."""
        self._task = asyncio.get_running_loop().create_task(
            self._server.serve(sockets=[self.socket]), name="tandem-gateway"
        )

    async def stop(self) -> None:
        """Stops taking requests and lets open ones finish (event streams get `grace_s`)."""
        drain(self.app)
        self._server.should_exit = True
        try:
            if self._task is not None:
                await self._task
        finally:
            self.socket.close()
