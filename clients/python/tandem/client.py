"""The Python client: typed methods for every Tandem RPC.

    from tandem import Client
    with Client("127.0.0.1:50051") as tandem:
        task = tandem.train(model="resnet18", dataset="synthetic", epochs=2, device="cpu")
        for event in tandem.logs(task.task_id):
            print(event.seq, event.message)

Methods return the `tandem.v1` messages (typed by the generated .pyi files) and raise
the exceptions of `tandem.errors`. `logs` survives a broken stream: it reconnects and
resumes from the next sequence number, so nothing is lost or repeated.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc

from tandem import contract
from tandem.contract import DEFAULT_GRPC_PORT, DEFAULT_PAGE_SIZE, EXPORT_TIMEOUT_S
from tandem.errors import InvalidArgument, TandemError, Unavailable, from_rpc_error
from tandem.v1 import (
    inference_service_pb2,
    inference_service_pb2_grpc,
    model_pb2,
    model_service_pb2,
    model_service_pb2_grpc,
    resource_service_pb2,
    resource_service_pb2_grpc,
    resources_pb2,
    task_pb2,
    task_service_pb2,
    task_service_pb2_grpc,
    training_service_pb2,
    training_service_pb2_grpc,
)

DEFAULT_ADDRESS = f"127.0.0.1:{DEFAULT_GRPC_PORT}"
# The terminal states as `tandem.v1.TaskState` numbers.
TERMINAL_STATES = frozenset(
    task_pb2.TaskState.Value(f"TASK_STATE_{name}") for name in contract.TERMINAL_STATE_NAMES
)


_CHANNEL_OPTIONS = [
    # A private connection per client: another client's failed attempts to the same
    # address (and their back-off) must not make this one fail fast.
    ("grpc.use_local_subchannel_pool", 1),
    # Reconnect quickly after a server restart (gRPC's default back-off grows to 2 min).
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


def _channel(address: str, *, tls: bool, ca_cert: str | Path | None) -> grpc.Channel:
    if ca_cert is None and not tls:
        return grpc.insecure_channel(address, options=_CHANNEL_OPTIONS)
    roots = Path(ca_cert).read_bytes() if ca_cert is not None else None
    credentials = grpc.ssl_channel_credentials(root_certificates=roots)
    return grpc.secure_channel(address, credentials, options=_CHANNEL_OPTIONS)


class Client:
    """A connection to one Tandem server. Thread-safe; close it (or use `with`)."""

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        token: str | None = None,
        *,
        timeout: float | None = 30.0,
        reconnect_timeout: float = 60.0,
        tls: bool = False,
        ca_cert: str | Path | None = None,
    ) -> None:
        """`tls`: speak TLS, trusting the system's CAs; `ca_cert`: a PEM file of the CA
        (or the self-signed certificate) to trust instead, which implies TLS."""
        self.address = address
        self._timeout = timeout
        self._reconnect_timeout = reconnect_timeout
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._channel = _channel(address, tls=tls, ca_cert=ca_cert)
        self._closed = False  # set by close(): a CANCELLED stream is then not resumed
        self._training = training_service_pb2_grpc.TrainingServiceStub(self._channel)
        self._inference = inference_service_pb2_grpc.InferenceServiceStub(self._channel)
        self._tasks = task_service_pb2_grpc.TaskServiceStub(self._channel)
        self._resources = resource_service_pb2_grpc.ResourceServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

    def close(self) -> None:
        self._closed = True
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- tasks ------------------------------------------------------------------------

    def train(self, model: str, dataset: str, **params: Any) -> task_pb2.Task:
        """Submits a training task (fields of `TrainRequest`); returns it, QUEUED."""
        request = training_service_pb2.TrainRequest(model=model, dataset=dataset, **params)
        return self._call(self._training.Train, request).task

    def infer(self, dataset: str, **params: Any) -> task_pb2.Task:
        """Submits a batch inference (`task_id`, `model_path` or `model_name`, and
        `InferRequest` fields)."""
        request = inference_service_pb2.InferRequest(dataset=dataset, **params)
        return self._call(self._inference.Infer, request).task

    def predict(
        self,
        image: bytes | str | Path,
        *,
        timeout: float | None = None,
        **params: Any,
    ) -> inference_service_pb2.PredictResponse:
        """Classifies one PNG or JPEG image (bytes or a file path) with a trained model."""
        data = image if isinstance(image, bytes) else Path(image).read_bytes()
        request = inference_service_pb2.PredictRequest(image=data, **params)
        return self._call(self._inference.Predict, request, timeout=timeout)

    def get_task(self, task_id: str) -> task_pb2.Task:
        return self._call(
            self._tasks.GetTask, task_service_pb2.GetTaskRequest(task_id=task_id)
        ).task

    def list_tasks(
        self,
        *,
        states: Sequence[int] = (),
        kind: int = task_pb2.TASK_KIND_UNSPECIFIED,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> Iterator[task_pb2.Task]:
        """Every matching task, newest first, fetching pages as it goes."""
        token = ""
        while True:
            # Enum values as plain ints: what users pass (task_pb2.TASK_STATE_RUNNING).
            fields: dict[str, Any] = {"states": list(states), "kind": kind}
            request = task_service_pb2.ListTasksRequest(
                page_size=page_size, page_token=token, **fields
            )
            page = self._call(self._tasks.ListTasks, request)
            yield from page.tasks
            token = page.next_page_token
            if not token:
                return

    def cancel(self, task_id: str) -> task_pb2.Task:
        request = task_service_pb2.CancelTaskRequest(task_id=task_id)
        return self._call(self._tasks.CancelTask, request).task

    def logs(
        self, task_id: str, *, follow: bool = True, from_seq: int = 0
    ) -> Iterator[task_pb2.TaskEvent]:
        """The task's events in order. With `follow`, live until its terminal state event;
        a broken stream is resumed from the next sequence number (for up to
        `reconnect_timeout` seconds of failed attempts), never losing or repeating one."""
        next_seq = max(from_seq, 1)
        failing_since: float | None = None
        while True:
            request = task_service_pb2.LogsRequest(
                task_id=task_id,
                from_seq=next_seq,
                follow=follow,
                max_events_per_message=contract.MAX_EVENTS_PER_MESSAGE,
            )
            stream = self._tasks.Logs(request, metadata=self._metadata)
            broken: grpc.RpcError | None = None
            try:
                for response in stream:
                    failing_since = None
                    # A server older than `max_events_per_message` sends `event` alone.
                    for event in response.events or (response.event,):
                        if event.seq < next_seq:
                            continue  # never repeat an event
                        next_seq = event.seq + 1
                        yield event
                        if follow and event.state in TERMINAL_STATES:
                            return
                if not follow:
                    return  # the history, as asked
                # Following, yet no terminal state event: either the server is going
                # away (it ends open streams when it shuts down), or the task ended
                # before `from_seq`. Only the first is worth resuming.
                if self._has_ended(task_id):
                    return
            except grpc.RpcError as error:
                # A server shutting down cancels the streams still open when its grace
                # period ends (CANCELLED, not UNAVAILABLE): broken too, unless it was
                # this client that closed its channel.
                resumable = error.code() is grpc.StatusCode.UNAVAILABLE or (
                    error.code() is grpc.StatusCode.CANCELLED and not self._closed
                )
                if not resumable:
                    raise from_rpc_error(error) from error
                broken = error
            finally:
                stream.cancel()
            if failing_since is not None:
                time.sleep(0.1)  # a second failure in a row: do not spin while it restarts
            now = time.monotonic()
            failing_since = failing_since or now
            remaining = self._reconnect_timeout - (now - failing_since)
            try:
                # Wait for the server to be reachable again (it may be restarting).
                grpc.channel_ready_future(self._channel).result(timeout=max(remaining, 0))
            except grpc.FutureTimeoutError:
                raise Unavailable(
                    f"lost the log stream of {task_id} and could not reconnect to "
                    f"{self.address} within {self._reconnect_timeout:g} s",
                    grpc.StatusCode.UNAVAILABLE,
                ) from broken

    def _has_ended(self, task_id: str) -> bool:
        request = task_service_pb2.GetTaskRequest(task_id=task_id)
        try:
            task = self._tasks.GetTask(request, timeout=5, metadata=self._metadata).task
        except grpc.RpcError as error:
            # UNAVAILABLE, a deadline, or CANCELLED by a server that stops while the call
            # is in flight (as in `logs`): it is going away, resume once it is back.
            going_away = error.code() in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
            ) or (error.code() is grpc.StatusCode.CANCELLED and not self._closed)
            if going_away:
                return False
            raise from_rpc_error(error) from error
        return task.state in TERMINAL_STATES

    # -- models -----------------------------------------------------------------------

    def export_model(
        self,
        *,
        task_id: str = "",
        model_path: str = "",
        model_name: str = "",
        format: str = "onnx",
        timeout: float | None = EXPORT_TIMEOUT_S,
    ) -> model_service_pb2.ExportModelResponse:
        """Exports a trained model (`task_id`, `model_path` or a registry reference
        `model_name`: `name`, `name/3`, `name@alias`) to `format`, "onnx" or
        "torchscript"; returns the checked file's path and size, and its `max_abs_diff`
        from PyTorch. Takes seconds to minutes, hence a timeout of its own."""
        name = format.strip().lower()
        if name not in contract.EXPORT_FORMATS:
            choices = ", ".join(contract.EXPORT_FORMATS)
            raise InvalidArgument(f"unknown format {format!r}; choose one of {choices}")
        request = model_service_pb2.ExportModelRequest(
            task_id=task_id,
            model_path=model_path,
            model_name=model_name,
            format=f"EXPORT_FORMAT_{name.upper()}",
        )
        return self._call(self._models.ExportModel, request, timeout=timeout)

    # -- the model registry -------------------------------------------------------------

    def list_models(self) -> list[model_pb2.Model]:
        """Every name in the registry, sorted, each with its newest version (`latest`)."""
        reply = self._call(self._models.ListModels, model_service_pb2.ListModelsRequest())
        return list(reply.models)

    def get_model(self, name: str) -> model_pb2.Model:
        """A name with every version (`versions`, oldest first) and its aliases."""
        request = model_service_pb2.GetModelRequest(name=name)
        model: model_pb2.Model = self._call(self._models.GetModel, request).model
        return model

    def set_model_alias(
        self, name: str, alias: str, version: int
    ) -> model_service_pb2.SetModelAliasResponse:
        """Points `alias` of `name` at `version` (creating or moving it); the answer has
        the version and the one it pointed at before (0 if new)."""
        request = model_service_pb2.SetModelAliasRequest(name=name, alias=alias, version=version)
        return self._call(self._models.SetModelAlias, request)

    def delete_model_alias(self, name: str, alias: str) -> int:
        """Removes an alias; returns the version it pointed at."""
        request = model_service_pb2.DeleteModelAliasRequest(name=name, alias=alias)
        version: int = self._call(self._models.DeleteModelAlias, request).version
        return version

    def delete_model_version(self, name: str, version: int) -> model_pb2.ModelVersion:
        """Removes a version from the registry (refused while aliased or served); returns
        it as it was. Its model file stays with its task."""
        request = model_service_pb2.DeleteModelVersionRequest(name=name, version=version)
        deleted: model_pb2.ModelVersion = self._call(
            self._models.DeleteModelVersion, request
        ).version
        return deleted

    # -- resources --------------------------------------------------------------------

    def resources(self) -> resource_service_pb2.GetResourcesResponse:
        return self._call(self._resources.GetResources, resource_service_pb2.GetResourcesRequest())

    def update_limits(
        self, max_concurrent: Mapping[str, Mapping[str, int]]
    ) -> dict[str, dict[str, int]]:
        """Changes limits, in the seed's shape: `{"cuda": {"training": 1, "inference": 5}}`.
        Returns the limits in force afterwards, in the same shape."""
        request = resource_service_pb2.UpdateLimitsRequest(
            max_concurrent={
                device: resources_pb2.ConcurrencyLimits(**dict(values))
                for device, values in max_concurrent.items()
            }
        )
        reply = self._call(self._resources.UpdateLimits, request)
        return {
            device: {"training": limits.training, "inference": limits.inference}
            for device, limits in reply.max_concurrent.items()
        }

    # -- the one place gRPC errors are translated -------------------------------------

    def _call(
        self, method: Callable[..., Any], request: Any, *, timeout: float | None = None
    ) -> Any:
        try:
            return method(request, timeout=timeout or self._timeout, metadata=self._metadata)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error


__all__ = ["DEFAULT_ADDRESS", "TERMINAL_STATES", "Client", "TandemError"]
