"""Translation between the server's records and the `tandem.v1` messages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from google.protobuf.timestamp_pb2 import Timestamp

from scheduler import WaitingInfo
from server.event_log import StoredEvent
from server.model_registry import ModelVersion
from server.records import TaskKind, TaskRecord, TaskState
from tandem.v1 import model_pb2, task_pb2

STATE_TO_PB: dict[TaskState, task_pb2.TaskState] = {
    TaskState.QUEUED: task_pb2.TASK_STATE_QUEUED,
    TaskState.RUNNING: task_pb2.TASK_STATE_RUNNING,
    TaskState.SUCCEEDED: task_pb2.TASK_STATE_SUCCEEDED,
    TaskState.FAILED: task_pb2.TASK_STATE_FAILED,
    TaskState.CANCELLED: task_pb2.TASK_STATE_CANCELLED,
    TaskState.PREEMPTED: task_pb2.TASK_STATE_PREEMPTED,
}
STATE_FROM_PB = {pb: state for state, pb in STATE_TO_PB.items()}
KIND_TO_PB: dict[TaskKind, task_pb2.TaskKind] = {
    TaskKind.TRAINING: task_pb2.TASK_KIND_TRAINING,
    TaskKind.INFERENCE: task_pb2.TASK_KIND_INFERENCE,
}
KIND_FROM_PB = {pb: kind for kind, pb in KIND_TO_PB.items()}
_EVENT_TYPE = {
    "log": task_pb2.EVENT_TYPE_LOG,
    "metrics": task_pb2.EVENT_TYPE_METRICS,
    "state": task_pb2.EVENT_TYPE_STATE,
}
_LEVEL = {
    "debug": task_pb2.LOG_LEVEL_DEBUG,
    "info": task_pb2.LOG_LEVEL_INFO,
    "warning": task_pb2.LOG_LEVEL_WARNING,
    "error": task_pb2.LOG_LEVEL_ERROR,
}


def timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def task_to_pb(task: TaskRecord, *, waiting: WaitingInfo | None = None) -> task_pb2.Task:
    """A Task message; `waiting` is where the task stands while it is queued."""
    message = task_pb2.Task(
        task_id=task.task_id,
        kind=KIND_TO_PB[task.kind],
        state=STATE_TO_PB[task.state],
        priority=task.priority,
        effective_priority=task.priority,
        device=task.device,
        assigned_device=task.assigned_device,
        create_time=timestamp(task.create_time),
        metrics=task.metrics,
        error=task.error,
        request_id=task.request_id,
        model_path=task.model_path,
        output_path=task.output_path,
        last_seq=task.last_seq,
        preemptions=task.preemptions,
    )
    if task.start_time is not None:
        message.start_time.CopyFrom(timestamp(task.start_time))
    if task.end_time is not None:
        message.end_time.CopyFrom(timestamp(task.end_time))
    if waiting is not None:
        message.queue_position = waiting.position
        message.waiting_reason = waiting.reason
        message.effective_priority = waiting.effective_priority
    if task.kind is TaskKind.TRAINING:
        params = task.training_params
        message.training.CopyFrom(
            task_pb2.TrainingParams(**{k: v for k, v in params.items() if k in _TRAINING_FIELDS})
        )
    else:
        message.inference.CopyFrom(task_pb2.InferenceParams(**task.params))
    return message


# The params a task shows; the rest (the file a worker loads its first weights from)
# is the server's own.
_TRAINING_FIELDS = frozenset(task_pb2.TrainingParams.DESCRIPTOR.fields_by_name)


def event_to_pb(task_id: str, event: StoredEvent) -> task_pb2.TaskEvent:
    return task_pb2.TaskEvent(
        seq=event.seq,
        time=timestamp(event.time),
        type=_EVENT_TYPE[event.type],
        level=_LEVEL.get(event.level, task_pb2.LOG_LEVEL_INFO),
        message=event.message,
        metrics=event.metrics,
        state=STATE_TO_PB[TaskState(event.state)]
        if event.state
        else task_pb2.TASK_STATE_UNSPECIFIED,
        task_id=task_id,
    )


def model_version_to_pb(version: ModelVersion) -> model_pb2.ModelVersion:
    return model_pb2.ModelVersion(
        name=version.name,
        version=version.version,
        task_id=version.task_id,
        model_path=version.path,
        architecture=version.architecture,
        classes=version.classes,
        image_size=version.image_size,
        metrics=version.metrics,
        size_bytes=version.size_bytes,
        create_time=timestamp(version.create_time),
        aliases=version.aliases,
    )


def model_to_pb(
    versions: Sequence[ModelVersion], aliases: Mapping[str, int], *, every_version: bool
) -> model_pb2.Model:
    """A name's `Model` from its versions (oldest first, at least one) and aliases; with
    `every_version`, `versions` is filled too (GetModel)."""
    oldest, latest = versions[0], versions[-1]
    return model_pb2.Model(
        name=latest.name,
        latest_version=latest.version,
        version_count=len(versions),
        aliases=aliases,
        create_time=timestamp(oldest.create_time),
        update_time=timestamp(latest.create_time),
        latest=model_version_to_pb(latest),
        versions=[model_version_to_pb(v) for v in versions] if every_version else [],
    )
