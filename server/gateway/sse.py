"""Server-sent events: a task's gRPC `Logs` stream as a `text/event-stream` body.

Each task event becomes one SSE message whose `id:` is the event's `seq`, so a browser's
EventSource that loses its connection reconnects with `Last-Event-ID` and the gateway
resumes right after it. While a task is quiet (an epoch can take minutes) a comment line
goes out every few seconds so proxies and clients with read timeouts keep the stream.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
from fastapi.responses import StreamingResponse

from server.gateway.convert import event_json
from server.gateway.errors import rpc_error_detail

MEDIA_TYPE = "text/event-stream"
HEADERS = {
    "Cache-Control": "no-cache",
    # nginx buffers responses by default; an event stream must go out as it is written.
    "X-Accel-Buffering": "no",
}
KEEP_ALIVE = b": keep-alive\n\n"


class EventStreamResponse(StreamingResponse):
    """A streaming response documented as `text/event-stream`."""

    media_type = MEDIA_TYPE


def message(
    data: dict[str, Any], *, event_id: int | None = None, event: str | None = None
) -> bytes:
    """One SSE message; JSON never holds a raw newline, so `data:` is one line."""
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    if event is not None:
        lines.append(f"event: {event}")
    lines.append("data: " + json.dumps(data, separators=(",", ":"), allow_nan=False))
    return ("\n".join(lines) + "\n\n").encode()


def parse_last_event_id(value: str | None) -> int | None:
    """The seq in a `Last-Event-ID` header, or None when there is none to honour."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    return int(text) if text.isdigit() and len(text) <= 18 else None


STOPPING = {"detail": "the REST gateway is shutting down; reconnect to resume", "status": 503}


async def stream(
    call: Any, *, target: str, keep_alive_s: float, closing: asyncio.Event
) -> AsyncIterator[bytes]:
    """The SSE body of a grpc.aio Logs `call`. Ends when the call does, or with an `error`
    event when `closing` is set (the gateway is stopping: it must not wait for tasks to end).
    The call is cancelled when the client leaves (Starlette cancels this generator)."""
    pending: asyncio.Future[Any] | None = None
    stopping = asyncio.ensure_future(closing.wait())
    try:
        while True:
            if pending is None:
                # One read in flight across keep-alives: cancelling a read would end the call.
                pending = asyncio.ensure_future(call.read())
            await asyncio.wait(
                {pending, stopping}, timeout=keep_alive_s, return_when=asyncio.FIRST_COMPLETED
            )
            if not pending.done():
                if stopping.done():
                    yield message(STOPPING, event="error")
                    return
                yield KEEP_ALIVE
                continue
            response, pending = pending.result(), None
            if response is grpc.aio.EOF:
                return
            # One SSE message per event, however the server grouped them.
            yield b"".join(
                message(event_json(event).model_dump(), event_id=event.seq)
                for event in response.events or (response.event,)
            )
    except grpc.RpcError as exc:
        # Headers are gone already: say what broke in the stream itself.
        status, text = rpc_error_detail(exc, target)
        yield message({"detail": text, "status": status}, event="error")
    finally:
        stopping.cancel()
        if pending is not None:
            pending.cancel()
        call.cancel()
