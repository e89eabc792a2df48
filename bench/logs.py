"""Log fan-out: a task's event, from its worker to each of 100 followers of its `Logs`
stream, end to end through gRPC.

- Source: a real training task in a real worker process (squeezenet1_1 on the synthetic
  set at 32 px, batch 16, many short epochs), which reports progress, epoch metrics and
  checkpoints: a few events a second, some in bursts of three (an epoch's last batch,
  its metrics, its checkpoint), as any training task does.
- Followers: 100 `Logs(follow=True)` streams, each on its own gRPC channel (its own
  connection, as separate clients would have), spread over 4 processes with one asyncio
  loop each (grpc and the stubs only), so the clients' own work is spread as it would
  be over many clients and is not queued behind one interpreter lock. Each opts in to
  grouped events (`max_events_per_message`), as every client in the repo does: events
  ready together reach it in one message, and each counts with that message's receipt.
- Latency: the time a follower received the event (`time.time()` as the message comes
  off its stream) minus the event's timestamp, which the server stamps with
  `time.time()` when it logs the event: the moment the worker's message has come off
  the worker's pipe. One clock, one machine. The worker's pipe write and the server's
  read before that stamp (a fraction of a millisecond: see the Predict breakdown in
  bench/README.md) are not in it.
- Only live events count: the task is held in the queue (the CPU's training limit is set
  to 0) until every follower has had its first event, the history replayed on connect;
  then the limit comes back and the task runs. Events stamped before that moment are
  left out.

Figures: p50, p99 and the maximum over every (event, follower) pair, the number of
live events, and the followers.
"""

from __future__ import annotations

import multiprocessing
import queue
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

from bench.follower import Receipt, follow
from bench.harness import Tandem, percentile
from bench.load import split_evenly
from bench.report import Goal
from tandem.v1 import resource_service_pb2

__all__ = ["FULL", "GOALS", "SMOKE", "Settings", "live_latencies", "measure", "run"]

MODEL = "squeezenet1_1"
IMAGE_SIZE = 32
BATCH_SIZE = 16
# Follower processes start, import grpc and connect; a loaded 2-core VM can be slow.
START_TIMEOUT_S = 120.0
END_TIMEOUT_S = 600.0

GOALS = (Goal("log_p99_ms", maximum=10.0),)


@dataclass(frozen=True)
class Settings:
    """Followers, the processes they are spread over, and the task's length in epochs."""

    followers: int
    processes: int
    epochs: int


# About 200 live events, 20,000 deliveries, 20 s of training on this VM.
FULL = Settings(followers=100, processes=4, epochs=60)
SMOKE = Settings(followers=4, processes=1, epochs=2)


def run(smoke: bool) -> dict[str, float]:
    """Measure with the FULL settings, or SMOKE ones that only check the harness."""
    return measure(SMOKE if smoke else FULL)


def measure(settings: Settings) -> dict[str, float]:
    """One task, `settings.followers` followers; see the module docstring."""
    spawn = multiprocessing.get_context("spawn")
    ready: Queue[Any] = spawn.Queue()
    done: Queue[Any] = spawn.Queue()
    with (
        tempfile.TemporaryDirectory(prefix="tandem-bench-logs-") as tmp,
        Tandem(Path(tmp) / "data", prewarm_workers=1) as tandem,
    ):
        tandem.wait_workers_ready("cpu", 1)
        limits = tandem.resources.GetResources(resource_service_pb2.GetResourcesRequest())
        cpu = limits.max_concurrent["cpu"]
        # Held in the queue until every follower is live.
        tandem.set_limits("cpu", training=0, inference=cpu.inference)
        task = tandem.train(
            model=MODEL,
            dataset="synthetic",
            epochs=settings.epochs,
            batch_size=BATCH_SIZE,
            image_size=IMAGE_SIZE,
            optimizer="sgd",
            device="cpu",
            val_split=0.0,
        )
        shares = split_evenly(settings.followers, settings.processes)
        target = f"127.0.0.1:{tandem.port}"
        processes = [
            spawn.Process(target=follow, args=(target, task.task_id, share, ready, done))
            for share in shares
        ]
        for process in processes:
            process.start()
        try:
            for _ in processes:
                ready.get(timeout=START_TIMEOUT_S)
            live_since = time.time()
            tandem.set_limits("cpu", training=cpu.training, inference=cpu.inference)
            receipts = [receipt for _ in processes for receipt in done.get(timeout=END_TIMEOUT_S)]
        except queue.Empty:
            raise RuntimeError("the log followers did not report in time") from None
        finally:
            for process in processes:
                process.join(timeout=10)
                if process.is_alive():
                    process.kill()
        tandem.succeeded(task.task_id)
    latencies = live_latencies(receipts, live_since)
    return {
        "log_p50_ms": percentile(latencies, 50) * 1000,
        "log_p99_ms": percentile(latencies, 99) * 1000,
        "log_max_ms": max(latencies) * 1000,
        "log_events": float(len({seq for seq, sent, _ in receipts if sent > live_since})),
        "log_followers": float(settings.followers),
    }


def live_latencies(receipts: list[Receipt], live_since: float) -> list[float]:
    """Seconds from stamp to receipt of the events stamped after `live_since`."""
    latencies = [received - sent for _, sent, received in receipts if sent > live_since]
    if not latencies:
        raise RuntimeError("no live event reached the followers")
    return latencies
