"""`tandem serve`: runs the service until SIGTERM or SIGINT, then shuts down cleanly."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sqlite3
import sys

from server import metrics
from server.app import create_server
from server.config import ServerConfig, check_exposure, is_loopback
from server.gateway import GatewayServer, create_gateway


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
    if not is_loopback(config.host) and not config.tls:
        logging.getLogger(__name__).warning(
            "serving %s without TLS: tokens and data cross the network in clear text; "
            "use --tls-cert and --tls-key",
            config.host,
        )
    service, port = await create_server(config)
    try:
        app = create_gateway(service.internal_target)
        metrics.mount(app, service.metrics, token=config.auth_token)
        # Binds now: a taken port is an error here, not inside uvicorn's task.
        gateway = GatewayServer(
            app, config.host, config.http_port, tls_cert=config.tls_cert, tls_key=config.tls_key
        )
    except BaseException:
        await service.stop()
        raise
    gateway.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Lines a script can wait for (and read the ports from, when it asked for port 0).
    print(f"tandem: serving gRPC on {config.host}:{port}", flush=True)
    print(f"tandem: serving REST on {gateway.url}", flush=True)
    await stop.wait()
    logging.getLogger(__name__).info("shutting down")
    # The gateway first: its open log streams end with an error event, then it exits.
    await gateway.stop()
    await service.stop()
    print("tandem: stopped", flush=True)


def run(config: ServerConfig) -> None:
    """Serves `config` until SIGTERM or SIGINT. A start that cannot happen (an exposed bind
    without a token, a port taken, a data dir full) prints one line and exits non-zero."""
    try:
        check_exposure(config)
    except ValueError as exc:  # the one check of every start, before anything is bound
        print(f"tandem: cannot start: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    configure_logging(config.log_format)
    try:
        asyncio.run(serve(config))
    except (OSError, sqlite3.Error) as exc:  # a port taken, a data dir full: one line, exit 1
        print(f"tandem: cannot start: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
