"""Prometheus metrics, served as text at `/metrics` on the HTTP port.

Gauges (queue depth, running tasks, limits, GPU memory) are read from the arbiter's
statistics snapshot and the device inventory at scrape time, so they are never stale
and cost nothing between scrapes. Counters and histograms (task outcomes, durations,
Predict and ModelInfer latency) are updated where the events happen. Each service has
its own registry, so several services in one process (tests) do not collide.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from scheduler import ArbiterStatistics
from scheduler.inventory import DeviceInventory
from server.auth import bearer_matches
from server.errors import ServiceError
from server.records import TaskRecord

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Live(Collector):
    """Reads the arbiter and the GPUs when scraped."""

    def __init__(
        self, statistics: Callable[[], ArbiterStatistics], inventory: DeviceInventory
    ) -> None:
        self._statistics = statistics
        self._inventory = inventory

    def collect(self) -> Iterator[Metric]:
        stats = self._statistics()
        labels = ["device", "kind"]
        queued = GaugeMetricFamily(
            "tandem_queue_depth", "Tasks waiting for a slot, per device and kind.", labels=labels
        )
        running = GaugeMetricFamily(
            "tandem_running_tasks", "Tasks holding a slot, per device and kind.", labels=labels
        )
        limit = GaugeMetricFamily(
            "tandem_concurrency_limit", "Slots per device and kind.", labels=labels
        )
        for pool in stats.pools:
            values = [pool.device, pool.kind.value]
            queued.add_metric(values, pool.waiting)
            running.add_metric(values, pool.running)
            limit.add_metric(values, pool.limit)
        memory = GaugeMetricFamily(
            "tandem_gpu_memory_bytes",
            "GPU memory as NVML reports it.",
            labels=["gpu", "device", "type"],
        )
        for gpu in self._inventory.gpus():
            for kind, value in (
                ("total", gpu.total_bytes),
                ("used", gpu.used_bytes),
                ("free", gpu.free_bytes),
            ):
                memory.add_metric([gpu.key, gpu.device, kind], value)
        yield from (queued, running, limit, memory)


class Metrics:
    """The service's metrics and their registry."""

    def __init__(
        self, statistics: Callable[[], ArbiterStatistics], inventory: DeviceInventory
    ) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_Live(statistics, inventory))
        self.task_outcomes = Counter(
            "tandem_task_outcomes",
            "Tasks that ended, per kind and terminal state.",
            ["kind", "state"],
            registry=self.registry,
        )
        self.task_duration = Histogram(
            "tandem_task_duration_seconds",
            "Run time of tasks that ran (start to end), per kind and terminal state.",
            ["kind", "state"],
            buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600),
            registry=self.registry,
        )
        self.preemptions = Counter(
            "tandem_preemptions",
            "Training tasks preempted by more urgent ones (each yield counts once).",
            registry=self.registry,
        )
        # The same count for GetResources, without reading the counter's internals.
        self.preemptions_total = 0
        self.predict_latency = Histogram(
            "tandem_predict_latency_seconds",
            "Predict calls, from request to answer, per outcome (ok or the gRPC code).",
            ["outcome"],
            buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
            registry=self.registry,
        )
        # The Open Inference Protocol's ModelInfer, over gRPC and REST alike (the gateway
        # calls it): calls by outcome, and the images they carried.
        self.model_infer_latency = Histogram(
            "tandem_model_infer_latency_seconds",
            "ModelInfer calls, from request to answer, per outcome (ok or the gRPC code).",
            ["outcome"],
            buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
            registry=self.registry,
        )
        self.model_infer_images = Counter(
            "tandem_model_infer_images",
            "Images answered by ModelInfer calls that succeeded.",
            registry=self.registry,
        )

    def task_ended(self, task: TaskRecord) -> None:
        labels = (task.kind.value, task.state.value)
        self.task_outcomes.labels(*labels).inc()
        if task.start_time is not None and task.end_time is not None:
            self.task_duration.labels(*labels).observe(max(0.0, task.end_time - task.start_time))

    def preempted(self) -> None:
        self.preemptions.inc()
        self.preemptions_total += 1

    def render(self) -> bytes:
        return generate_latest(self.registry)


def mount(app: Starlette, metrics: Metrics, *, token: str | None = None) -> None:
    """Serves `metrics` at `GET /metrics` of the HTTP app (the REST gateway); with a
    token, only to requests that carry it (Prometheus sends it with `authorization`)."""

    async def endpoint(request: Request) -> Response:
        if token and not bearer_matches(request.headers.get("authorization"), token):
            return JSONResponse(
                {"detail": "missing or wrong token: send 'Authorization: Bearer <token>'"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    app.add_route("/metrics", endpoint, methods=["GET"], include_in_schema=False)


@contextlib.contextmanager
def timed_call(histogram: Histogram | None) -> Iterator[None]:
    """Observes the block's seconds in `histogram` (None: no metrics), labelled by how it
    ended: `ok`, a ServiceError's status code name, or `INTERNAL` for anything else."""
    started = time.perf_counter()
    outcome = "ok"
    try:
        yield
    except ServiceError as exc:
        outcome = exc.code.name
        raise
    except Exception:
        outcome = "INTERNAL"
        raise
    finally:
        if histogram is not None:
            histogram.labels(outcome).observe(time.perf_counter() - started)
