"""The service on its own event loop in a background thread, for programs that are
not asyncio themselves: tests, benchmarks, notebooks. `tandem serve` does not use it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TypeVar

from scheduler import DeviceInventory
from server.app import Service, create_server
from server.config import ServerConfig

T = TypeVar("T")


class ServerThread:
    """Runs `create_server(config)` on a private event loop in a daemon thread."""

    def __init__(self, config: ServerConfig, inventory: DeviceInventory | None = None) -> None:
        self.config = config
        self.inventory = inventory
        self.loop = asyncio.new_event_loop()
        self.service: Service | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> ServerThread:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(
            create_server(self.config, inventory=self.inventory), self.loop
        )
        self.service, _ = future.result(timeout=120)
        return self

    @property
    def port(self) -> int:
        assert self.service is not None
        return self.service.port

    def call(self, fn: Callable[[], T]) -> T:
        """Runs `fn` on the server's loop thread (the only thread that may touch its state)."""

        async def on_loop() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(on_loop(), self.loop).result(timeout=30)

    def stop(self) -> None:
        """Stops the service and its loop; a second call does nothing."""
        if self.loop.is_closed():
            return
        if self.service is not None:
            stopping = self.service.stop(grace_s=1.0)
            asyncio.run_coroutine_threadsafe(stopping, self.loop).result(timeout=60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)
        self.loop.close()
