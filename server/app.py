"""Assembly: builds the store, arbiter, executor and servicers into one gRPC server.

`create_server(config)` is what `tandem serve` and the tests call; with
`grpc_port=0` it binds a free port and returns it. Everything it starts is registered
on one `AsyncExitStack`, which both a failed start and `Service.stop` unwind.
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from engines.executor import Executor
from scheduler import Arbiter
from scheduler.inventory import DeviceInventory
from scheduler.memory import MemoryGate
from server.auth import TokenAuth
from server.backends import start_backend
from server.config import ServerConfig
from server.device_registry import DeviceRegistry, with_saved_limits
from server.dispatcher import Dispatcher
from server.event_log import EventLogs
from server.exports import Exporter
from server.journal import Journal
from server.manager import TaskManager
from server.memory import MemoryPlanner
from server.metrics import Metrics
from server.model_registry import ModelRegistry
from server.recovery import Recovery
from server.registry_store import RegistryStore
from server.servicers.inference import InferenceServicer
from server.servicers.models import ModelServicer
from server.servicers.open_inference import OpenInferenceServicer
from server.servicers.resources import ResourceServicer
from server.servicers.tasks import TaskServicer, add_task_service
from server.servicers.training import TrainingServicer
from server.serving import ModelServer
from server.store import TaskStore
from server.thread_share import ThreadShare
from server.tls import PrivateSocket, TlsFiles
from tandem.contract import MAX_MESSAGE_BYTES
from tandem.inference import open_inference_pb2, open_inference_pb2_grpc
from tandem.v1 import (
    inference_service_pb2,
    inference_service_pb2_grpc,
    model_service_pb2,
    model_service_pb2_grpc,
    resource_service_pb2,
    resource_service_pb2_grpc,
    task_service_pb2,
    training_service_pb2,
    training_service_pb2_grpc,
)

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    training_service_pb2.DESCRIPTOR.services_by_name["TrainingService"].full_name,
    inference_service_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name,
    task_service_pb2.DESCRIPTOR.services_by_name["TaskService"].full_name,
    resource_service_pb2.DESCRIPTOR.services_by_name["ResourceService"].full_name,
    model_service_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name,
    # The Open Inference Protocol (KServe v2), for tritonclient and KServe's clients.
    open_inference_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
)


@dataclass
class Service:
    """A running Tandem: the gRPC server and what it owns."""

    server: grpc.aio.Server
    port: int
    manager: TaskManager
    dispatcher: Dispatcher
    devices: DeviceRegistry
    model_server: ModelServer
    # The CPU threads of every running job, as the device's cores are shared now.
    threads: ThreadShare
    executor: Executor
    metrics: Metrics
    store: TaskStore
    # Where the in-process REST gateway dials this server.
    internal_target: str
    # Undoes everything `create_server` started, in reverse order; it stops the gRPC
    # server with `_grace.seconds`.
    _stack: AsyncExitStack = field(repr=False)
    _grace: _Grace = field(repr=False)

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stops taking calls, lets open calls finish for `grace_s`, then stops workers."""
        self._grace.seconds = grace_s
        await self._stack.aclose()


@dataclass
class _Grace:
    """How long open calls may finish when the gRPC server stops (set by `stop`)."""

    seconds: float = 5.0


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
    async with AsyncExitStack() as stack:
        store = TaskStore(config.db_path)
        stack.callback(store.close)
        backend = await start_backend(config, stack, inventory)
        gate = MemoryGate(backend.inventory, headroom_bytes=config.gpu_headroom_bytes)
        arbiter = Arbiter(
            with_saved_limits(backend.default_limits, store.load_limits()),
            max_waiting=config.max_waiting,
            aging_interval_s=config.aging_interval_s,
            gate=gate,
        )
        journal = Journal(store, EventLogs(config.tasks_dir))
        dispatcher = Dispatcher(
            arbiter,
            # Aging changes the order of waiting tasks over time; a cheap periodic
            # re-check lets that take effect even when no task starts or ends.
            tick_interval_s=max(0.05, min(1.0, config.aging_interval_s / 10)),
            housekeeping=[journal.flush],
        )
        devices = DeviceRegistry(store, dispatcher)
        threads = ThreadShare(backend.cores, backend.executor.set_threads)
        planner = MemoryPlanner(store, gate)
        metrics = Metrics(arbiter.statistics, backend.inventory)
        model_server = ModelServer(config, dispatcher, planner, threads, backend.executor)
        registry_store = RegistryStore(config.db_path)
        stack.callback(registry_store.close)
        registry = ModelRegistry(
            registry_store, served_paths=lambda: {path for _, path, _ in model_server.loaded()}
        )
        manager = TaskManager(
            config,
            store,
            journal,
            dispatcher,
            devices,
            Recovery(config, store, journal, dispatcher, devices, planner),
            backend.executor,
            threads,
            planner,
            metrics,
            registry,
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
        health_servicer = _add_servicers(
            server,
            config,
            manager,
            model_server,
            registry,
            devices,
            metrics,
            backend.inventory,
            gate,
        )
        port, internal_target, private_socket = _bind(server, config, tls)
        if private_socket is not None:
            stack.callback(private_socket.remove)
        grace = _Grace()

        async def stop_server() -> None:
            await server.stop(grace.seconds)

        stack.push_async_callback(stop_server)
        await model_server.start()
        stack.push_async_callback(model_server.close)
        await dispatcher.start()
        stack.push_async_callback(dispatcher.close)
        if backend.cluster is not None:
            backend.cluster.watch(devices)
        # The manager closes first: it ends the Logs streams, which would otherwise hold
        # the server's grace period, and stops recording what workers report (also
        # when its own start, the recovery of earlier tasks, fails part-way).
        stack.push_async_callback(manager.close)
        await manager.start()
        await server.start()
        stack.push_async_callback(health_servicer.enter_graceful_shutdown)
        # SERVING only now: the store is open, queued tasks are back, workers are starting.
        for name in ("", *SERVICE_NAMES):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("gRPC listening on %s:%d (data dir %s)", config.host, port, config.data_dir)
        service = Service(
            server,
            port,
            manager,
            dispatcher,
            devices,
            model_server,
            threads,
            backend.executor,
            metrics,
            store,
            internal_target,
            stack.pop_all(),
            grace,
        )
    return service, port


def _add_servicers(
    server: grpc.aio.Server,
    config: ServerConfig,
    manager: TaskManager,
    model_server: ModelServer,
    registry: ModelRegistry,
    devices: DeviceRegistry,
    metrics: Metrics,
    inventory: DeviceInventory,
    gate: MemoryGate,
) -> health.aio.HealthServicer:
    """Registers every service, health and reflection included; returns health's."""
    training_service_pb2_grpc.add_TrainingServiceServicer_to_server(
        TrainingServicer(
            manager,
            registry,
            dataset_roots=config.dataset_roots,
            model_roots=config.model_roots,
        ),
        server,
    )
    inference_service_pb2_grpc.add_InferenceServiceServicer_to_server(
        InferenceServicer(
            manager,
            model_server,
            registry,
            dataset_roots=config.dataset_roots,
            model_roots=config.model_roots,
            metrics=metrics,
        ),
        server,
    )
    add_task_service(TaskServicer(manager), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelServicer(
            manager,
            registry,
            Exporter(),
            model_roots=config.model_roots,
            data_dir=config.data_dir,
            task_dir=config.task_dir,
        ),
        server,
    )
    resource_service_pb2_grpc.add_ResourceServiceServicer_to_server(
        ResourceServicer(
            devices,
            devices.statistics,
            inventory,
            lambda: metrics.preemptions_total,
            gate.reserved,
        ),
        server,
    )
    open_inference_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
        OpenInferenceServicer(registry, model_server, devices, metrics=metrics), server
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    return health_servicer


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
