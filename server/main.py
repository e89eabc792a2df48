"""`tandem serve`: runs the service until SIGTERM or SIGINT, then shuts down cleanly."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys

from server.app import create_server
from server.config import ServerConfig


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(log_format: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)


async def serve(config: ServerConfig) -> None:
    service, port = await create_server(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # One line a script can wait for (and read the port from, when it asked for port 0).
    print(f"tandem: serving gRPC on {config.host}:{port}", flush=True)
    await stop.wait()
    logging.getLogger(__name__).info("shutting down")
    await service.stop()
    print("tandem: stopped", flush=True)


def run(config: ServerConfig) -> None:
    configure_logging(config.log_format)
    asyncio.run(serve(config))
