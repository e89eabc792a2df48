"""Token auth: every RPC needs the bearer token except health; REST and /metrics too;
an exposed bind without a token refuses to start."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc

import tandem
from server import metrics
from server.config import check_exposure, load
from server.gateway import GatewayServer, create_gateway
from tandem import Client
from tandem.v1 import task_service_pb2, task_service_pb2_grpc
from tests.conftest import ServerThread

TOKEN = "s3cret-token"


def test_grpc_calls_need_the_token(fresh_server: Callable[..., ServerThread]) -> None:
    server = fresh_server(auth_token=TOKEN, prewarm_workers=0)
    address = f"127.0.0.1:{server.port}"
    with grpc.insecure_channel(address) as channel:
        tasks = task_service_pb2_grpc.TaskServiceStub(channel)
        for metadata in [(), (("authorization", "Bearer wrong"),), (("authorization", TOKEN),)]:
            with pytest.raises(grpc.RpcError) as info:
                tasks.GetTask(task_service_pb2.GetTaskRequest(task_id="x"), metadata=metadata)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as info:  # a streaming RPC is refused the same way
            list(tasks.Logs(task_service_pb2.LogsRequest(task_id="x")))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING  # open to probes
    with Client(address, token=TOKEN) as client:
        with pytest.raises(tandem.NotFound):  # authenticated: the real answer
            client.get_task("x")
        assert "cpu" in client.resources().device_usage
    with Client(address) as anonymous, pytest.raises(tandem.Unauthenticated):
        anonymous.resources()


def test_rest_and_metrics_need_the_token(fresh_server: Callable[..., ServerThread]) -> None:
    server = fresh_server(auth_token=TOKEN, prewarm_workers=0)
    assert server.service is not None
    app = create_gateway(f"127.0.0.1:{server.port}")
    metrics.mount(app, server.service.metrics, token=TOKEN)
    gateway = GatewayServer(app, "127.0.0.1", 0, grace_s=1)

    async def start() -> None:
        gateway.start()

    asyncio.run_coroutine_threadsafe(start(), server.loop).result(30)
    try:
        url = gateway.url
        good = {"Authorization": f"Bearer {TOKEN}"}
        assert requests.get(f"{url}/api/v2/resources", timeout=10).status_code == 401
        assert requests.get(f"{url}/api/v2/resources", headers=good, timeout=10).status_code == 200
        assert requests.get(f"{url}/api/v1/health", timeout=10).status_code == 200
        assert requests.get(f"{url}/metrics", timeout=10).status_code == 401
        assert requests.get(f"{url}/metrics", headers=good, timeout=10).status_code == 200
    finally:
        asyncio.run_coroutine_threadsafe(gateway.stop(), server.loop).result(30)


def test_an_exposed_bind_needs_a_token_or_insecure(tmp_path: Path) -> None:
    exposed = load(host="0.0.0.0", data_dir=str(tmp_path), env={})
    with pytest.raises(ValueError, match="without a token"):
        check_exposure(exposed)
    check_exposure(load(host="0.0.0.0", data_dir=str(tmp_path), env={}, auth_token=TOKEN))
    check_exposure(load(host="0.0.0.0", data_dir=str(tmp_path), env={}, insecure=True))
    check_exposure(load(host="127.0.0.1", data_dir=str(tmp_path), env={}))


def test_an_unusable_data_dir_stops_the_start_with_a_sentence(tmp_path: Path) -> None:
    import subprocess
    import sys

    blocker = tmp_path / "f"
    blocker.write_text("not a directory")
    tandem_bin = str(Path(sys.executable).parent / "tandem")
    result = subprocess.run(
        [
            tandem_bin,
            "serve",
            "--grpc-port",
            "0",
            "--http-port",
            "0",
            "--data-dir",
            str(blocker / "data"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "data dir" in result.stderr and "not writable" in result.stderr
    assert "Traceback" not in result.stderr
