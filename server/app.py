"""Assembly: builds the store, arbiter, executor and servicers into one gRPC server.

`create_server(config)` is what `tandem serve` and the tests call; with
`grpc_port=0` it binds a free port and returns it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from engines.local import LocalExecutor
from scheduler import Arbiter, Limits, default_limits
from scheduler.inventory import DeviceInventory, NvmlInventory
from scheduler.memory import MemoryGate
from server.auth import TokenAuth
from server.config import ServerConfig
from server.event_log import EventLogs
from server.manager import TaskManager, with_saved_limits
from server.memory import MemoryPlanner
from server.metrics import Metrics
from server.servicers.inference import InferenceServicer
from server.servicers.resources import ResourceServicer
from server.servicers.tasks import TaskServicer
from server.servicers.training import TrainingServicer
from server.serving import ModelServer
from server.store import TaskStore
from server.tls import PrivateSocket, TlsFiles
from tandem.v1 import (
    inference_service_pb2,
    inference_service_pb2_grpc,
    resource_service_pb2,
    resource_service_pb2_grpc,
    task_service_pb2,
    task_service_pb2_grpc,
    training_service_pb2,
    training_service_pb2_grpc,
)

if TYPE_CHECKING:  # Ray is imported only when the Ray executor is chosen
    from engines.ray_executor import RayExecutor
    from server.cluster import Cluster

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    training_service_pb2.DESCRIPTOR.services_by_name["TrainingService"].full_name,
    inference_service_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name,
    task_service_pb2.DESCRIPTOR.services_by_name["TaskService"].full_name,
    resource_service_pb2.DESCRIPTOR.services_by_name["ResourceService"].full_name,
)
# Big enough for an encoded image in Predict, small enough to refuse abuse.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


@dataclass
class Service:
    """A running Tandem: the gRPC server and what it owns."""

    server: grpc.aio.Server
    port: int
    manager: TaskManager
    model_server: ModelServer
    executor: LocalExecutor | RayExecutor
    metrics: Metrics
    store: TaskStore
    health: health.aio.HealthServicer
    # Where the in-process REST gateway dials this server.
    internal_target: str
    private_socket: PrivateSocket | None = None
    # The Ray cluster, with `--executor ray`.
    cluster: Cluster | None = None

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stops taking calls, lets open calls finish for `grace_s`, then stops workers."""
        await self.health.enter_graceful_shutdown()
        # The manager first: it ends the Logs streams, which would otherwise hold the
        # server's grace period, and stops admissions that would only spawn workers.
        await self.manager.close()
        await self.model_server.close()
        await self.server.stop(grace_s)
        await self.executor.close()
        if self.cluster is not None:
            await self.cluster.close()
        self.store.close()
        if self.private_socket is not None:
            self.private_socket.remove()


def initial_limits(inventory: DeviceInventory, store: TaskStore) -> dict[str, Limits]:
    """Default limits per device, overridden by limits saved by `UpdateLimits`."""
    return with_saved_limits(default_limits(len(inventory.gpus())), store.load_limits())


class DataDirError(OSError):
    """The data dir cannot hold Tandem's state; the message says why."""


def check_data_dir(path: Path) -> None:
    """Fails at start, with a sentence, if the data dir is not a writable directory:
    better than tasks failing one by one later."""
    probe = path / ".tandem-write-check"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise DataDirError(f"data dir {path} is not writable: {exc.strerror or exc}") from None


async def create_server(
    config: ServerConfig, *, inventory: DeviceInventory | None = None
) -> tuple[Service, int]:
    """Builds and starts the service; returns it and the bound gRPC port."""
    # Files first: a bad certificate should stop the start before any worker spawns.
    tls = (
        TlsFiles.read(config.tls_cert, config.tls_key)
        if config.tls_cert and config.tls_key
        else None
    )
    check_data_dir(config.data_dir)
    config.tasks_dir.mkdir(parents=True, exist_ok=True)
    cluster = await _connect_cluster(config) if config.executor == "ray" else None
    # From here on a failure undoes what has started: Ray's connection, workers, the store.
    store: TaskStore | None = None
    executor: LocalExecutor | RayExecutor | None = None
    manager: TaskManager | None = None
    private_socket: PrivateSocket | None = None
    try:
        if cluster is not None:
            inventory = cluster.inventory
        inventory = inventory or NvmlInventory()
        store = TaskStore(config.db_path)
        gate = MemoryGate(inventory, headroom_bytes=config.gpu_headroom_bytes)
        arbiter = Arbiter(
            initial_limits(inventory, store)
            if cluster is None
            else with_saved_limits(cluster.default_limits(), store.load_limits()),
            max_waiting=config.max_waiting,
            aging_interval_s=config.aging_interval_s,
            gate=gate,
        )
        if cluster is None:
            executor = LocalExecutor(
                prewarm={"cpu": config.prewarm_workers} if config.prewarm_workers else {},
                cancel_grace_s=config.cancel_grace_s,
            )
        else:
            executor = cluster.executor
        await executor.start()
        manager = TaskManager(
            config,
            store,
            EventLogs(config.tasks_dir),
            arbiter,
            executor,
            MemoryPlanner(store, gate),
        )
        server = grpc.aio.server(
            interceptors=[TokenAuth(config.auth_token)] if config.auth_token else [],
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                # No second process may bind our port and take a share of our calls.
                ("grpc.so_reuseport", 0),
            ],
        )
        training_service_pb2_grpc.add_TrainingServiceServicer_to_server(
            TrainingServicer(manager, roots=config.dataset_roots), server
        )
        metrics = Metrics(arbiter.statistics, inventory)
        manager.on_task_end = metrics.task_ended
        model_server = ModelServer(config, manager, executor)
        manager.after_pass = model_server.maintain
        inference_service_pb2_grpc.add_InferenceServiceServicer_to_server(
            InferenceServicer(
                manager,
                model_server,
                dataset_roots=config.dataset_roots,
                model_roots=config.model_roots,
                metrics=metrics,
            ),
            server,
        )
        task_service_pb2_grpc.add_TaskServiceServicer_to_server(TaskServicer(manager), server)
        resource_service_pb2_grpc.add_ResourceServiceServicer_to_server(
            ResourceServicer(manager, inventory), server
        )
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        port, internal_target, private_socket = _bind(server, config, tls)
        await manager.start()
        if cluster is not None:
            cluster.attach(manager)
        await server.start()
    except BaseException:
        # Nothing half-started is left behind: workers, the store, the gateway's socket.
        if private_socket is not None:
            private_socket.remove()
        if manager is not None:
            await manager.close()
        if executor is not None:
            await executor.close()
        if cluster is not None:
            await cluster.close()  # disconnects from Ray
        if store is not None:
            store.close()
        raise
    # SERVING only now: the store is open, queued tasks are back, workers are starting.
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("gRPC listening on %s:%d (data dir %s)", config.host, port, config.data_dir)
    service = Service(
        server,
        port,
        manager,
        model_server,
        executor,
        metrics,
        store,
        health_servicer,
        internal_target,
        private_socket,
        cluster,
    )
    return service, port


async def _connect_cluster(config: ServerConfig) -> Cluster:
    from server.cluster import Cluster

    cluster = Cluster(config)
    await cluster.connect()
    return cluster


def _bind(
    server: grpc.aio.Server, config: ServerConfig, tls: TlsFiles | None
) -> tuple[int, str, PrivateSocket | None]:
    """Binds the public port (TLS when configured); returns it and the gateway's target.

    With TLS the gateway gets a private Unix socket (see `server.tls`); without, it dials
    the public port on loopback."""
    address = f"{config.host}:{config.grpc_port}"
    # grpcio reports a failed bind by raising RuntimeError (older versions returned 0).
    try:
        port = (
            server.add_insecure_port(address)
            if tls is None
            else server.add_secure_port(address, tls.grpc_credentials())
        )
    except RuntimeError:
        port = 0
    if port == 0:
        raise OSError(f"could not bind gRPC to {address}: the port is taken or not ours")
    if tls is None:
        return port, loopback_target(config.host, port), None
    private_socket = PrivateSocket()
    try:
        bound = server.add_insecure_port(private_socket.target)
    except RuntimeError:
        bound = 0
    if bound == 0:
        private_socket.remove()
        raise OSError(f"could not bind the gateway's socket {private_socket.path}")
    return port, private_socket.target, private_socket


def loopback_target(host: str, port: int) -> str:
    """Where to dial a server bound to `host:port` from this machine: never a wildcard."""
    if host in ("0.0.0.0", ""):
        return f"127.0.0.1:{port}"
    if host in ("::", "[::]"):
        return f"[::1]:{port}"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
