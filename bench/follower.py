"""The followers of the log benchmark (`bench/logs.py`): one process holding many `Logs`
streams of one task, each on its own gRPC channel (a connection of its own, as separate
clients have), all on one asyncio loop.

Kept apart from `bench.logs` so that the follower processes import grpc and the
generated stubs only: not torch, not the server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from multiprocessing.queues import Queue
from typing import Any

import grpc

from tandem.contract import MAX_EVENTS_PER_MESSAGE
from tandem.v1 import task_service_pb2, task_service_pb2_grpc

__all__ = ["Receipt", "follow"]

# (event seq, event time stamped by the server, time.time() when this follower got it)
Receipt = tuple[int, float, float]


def follow(target: str, task_id: str, streams: int, ready: Queue[Any], done: Queue[Any]) -> None:
    """Process entry: follows `task_id` on `streams` streams until the task ends.

    Puts None on `ready` once every stream has received its first event (from then on
    each is live: it has caught up with the history and waits for new events), then
    the receipts of every stream, as one list, on `done`.
    """
    receipts = asyncio.run(_follow_all(target, task_id, streams, ready))
    done.put(receipts)


async def _follow_all(target: str, task_id: str, streams: int, ready: Queue[Any]) -> list[Receipt]:
    started = 0
    all_started = asyncio.Event()

    def on_first() -> None:
        nonlocal started
        started += 1
        if started == streams:
            all_started.set()

    async def announce() -> None:
        await all_started.wait()
        ready.put(None)

    announcer = asyncio.create_task(announce())
    results = await asyncio.gather(*(_one(target, task_id, on_first) for _ in range(streams)))
    if not all_started.is_set():
        # A stream ended without an event (the task was gone): never leave the parent
        # waiting for a signal that cannot come.
        announcer.cancel()
        ready.put(None)
    return [receipt for result in results for receipt in result]


async def _one(target: str, task_id: str, on_first: Callable[[], None]) -> list[Receipt]:
    receipts: list[Receipt] = []
    # A private subchannel pool: a separate connection per follower, as separate
    # clients would have, rather than all streams multiplexed on one.
    options = [("grpc.use_local_subchannel_pool", 1)]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        stub = task_service_pb2_grpc.TaskServiceStub(channel)
        # Opted in to grouped events, as every client of the repo is.
        request = task_service_pb2.LogsRequest(
            task_id=task_id, follow=True, max_events_per_message=MAX_EVENTS_PER_MESSAGE
        )
        async for response in stub.Logs(request, timeout=600):
            received = time.time()
            if not receipts:
                on_first()
            for event in response.events:
                sent = event.time.seconds + event.time.nanos * 1e-9
                receipts.append((event.seq, sent, received))
    return receipts
