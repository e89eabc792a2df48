"""`/metrics` on the HTTP port: Prometheus text that parses and moves as tasks run."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import requests
from prometheus_client.parser import text_string_to_metric_families

from server import metrics
from server.gateway import GatewayServer, create_gateway
from tandem.v1 import task_pb2
from tests.conftest import ServerThread, Stubs


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = requests.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_metrics_parse_and_move(fresh_server: Callable[..., ServerThread]) -> None:
    server = fresh_server()
    assert server.service is not None
    app = create_gateway(f"127.0.0.1:{server.port}")
    metrics.mount(app, server.service.metrics)
    gateway = GatewayServer(app, "127.0.0.1", 0, grace_s=1)

    async def start() -> None:
        gateway.start()

    asyncio.run_coroutine_threadsafe(start(), server.loop).result(30)
    try:
        before = scrape(gateway.url)
        assert before[("tandem_concurrency_limit", (("device", "cpu"), ("kind", "training")))] == 2
        assert before[("tandem_queue_depth", (("device", "cpu"), ("kind", "training")))] == 0
        succeeded = ("tandem_task_outcomes_total", (("kind", "training"), ("state", "SUCCEEDED")))
        assert succeeded not in before

        stubs = Stubs.connect(server.port)
        task = stubs.train(epochs=1)
        assert stubs.events(task.task_id)[-1].state == task_pb2.TASK_STATE_SUCCEEDED
        after = scrape(gateway.url)
        assert after[succeeded] == 1
        duration = ("tandem_task_duration_seconds_count", succeeded[1])
        assert after[duration] == 1
        stubs.channel.close()
    finally:
        asyncio.run_coroutine_threadsafe(gateway.stop(), server.loop).result(30)
