"""Translation between REST JSON and `tandem.v1` messages, both ways.

Tasks and events go out through `MessageToDict` (the gRPC contract's own JSON) and are then
flattened to the friendlier REST shape: plain-word enums, ISO-8601 times, parameters also
at the top level. Request bodies come in as validated pydantic models and become messages
with only the fields the caller set, so the server applies its documented defaults.
"""

from __future__ import annotations

import math
from typing import Any, TypeVar

from fastapi import HTTPException
from google.protobuf import json_format
from google.protobuf.message import Message
from pydantic import BaseModel

from server.gateway.responses import (
    DeviceUsageOut,
    GpuMemoryOut,
    LimitsOut,
    LogEventOut,
    ResourcesOut,
    TaskOut,
)
from tandem.client import TERMINAL_STATES
from tandem.v1 import resource_service_pb2, resources_pb2, task_pb2

M = TypeVar("M", bound=Message)

_STATE_PREFIX = "TASK_STATE_"
_KIND_PREFIX = "TASK_KIND_"
_TRAINING_FLAT = (
    "model",
    "dataset",
    "epochs",
    "batch_size",
    "learning_rate",
    "optimizer",
    "image_size",
    "seed",
    "val_split",
    "preemptible",
)
# `task_id` stays nested: at the top level it is the task's own id.
_INFERENCE_FLAT = ("model", "dataset", "batch_size", "top_k", "image_size")
_ALL_FLAT = (*_TRAINING_FLAT, "top_k")


def message(cls: type[M], body: BaseModel | dict[str, Any]) -> M:
    """A `cls` message with the fields the caller set; unset ones keep their proto defaults.

    Values the schema allows but protobuf cannot hold (a string with a lone surrogate)
    are the caller's mistake: 400, never a crash."""
    fields = body if isinstance(body, dict) else body.model_dump(exclude_none=True)
    try:
        return cls(**fields)
    except (ValueError, TypeError) as exc:
        raise HTTPException(400, f"the request holds a value that cannot be sent: {exc}") from None


def _dict(msg: Message) -> dict[str, Any]:
    return json_format.MessageToDict(
        msg,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
        unquote_int64_if_possible=True,
    )


def _strip(value: Any, prefix: str) -> str:
    # An enum value newer than these stubs arrives as a number; show it, do not fail.
    text = str(value)
    return text[len(prefix) :] if text.startswith(prefix) else text


def finite(value: Any) -> float | None:
    """`value` as a float, or None for NaN, infinities and anything not a number: JSON has
    no such numbers (and MessageToDict writes them as strings)."""
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def _finite(values: dict[str, Any]) -> dict[str, float | None]:
    return {key: finite(value) for key, value in values.items()}


def task_json(task: task_pb2.Task) -> TaskOut:
    """The REST shape of a task (see `TaskOut`)."""
    raw = _dict(task)
    training = raw.get("training")
    inference = raw.get("inference")
    flat: dict[str, Any] = dict.fromkeys(_ALL_FLAT)
    if training is not None:
        flat.update({k: training.get(k) for k in _TRAINING_FLAT})
    if inference is not None:
        flat.update({k: inference.get(k) for k in _INFERENCE_FLAT})
    model_path = raw.get("model_path", "") or (inference or {}).get("model_path", "")
    return TaskOut(
        task_id=raw.get("task_id", ""),
        kind=_strip(raw.get("kind", ""), _KIND_PREFIX).lower(),
        state=_strip(raw.get("state", ""), _STATE_PREFIX),
        priority=raw.get("priority", 0),
        effective_priority=raw.get("effective_priority", 0),
        device=raw.get("device", ""),
        assigned_device=raw.get("assigned_device", ""),
        create_time=raw.get("create_time"),
        start_time=raw.get("start_time"),
        end_time=raw.get("end_time"),
        metrics=_finite(raw.get("metrics", {})),
        error=raw.get("error", ""),
        queue_position=raw.get("queue_position", 0),
        waiting_reason=raw.get("waiting_reason", ""),
        request_id=raw.get("request_id", ""),
        model_path=model_path,
        output_path=raw.get("output_path", ""),
        last_seq=int(raw.get("last_seq", 0)),
        preemptions=int(raw.get("preemptions", 0)),
        training=training,
        inference=inference,
        **flat,
    )


def event_json(event: task_pb2.TaskEvent) -> LogEventOut:
    """A log event as the SSE `data:` JSON: plain-word type, level and state."""
    raw = _dict(event)
    has_state = event.state != task_pb2.TASK_STATE_UNSPECIFIED
    return LogEventOut(
        seq=int(raw.get("seq", 0)),
        time=raw.get("time"),
        type=_strip(raw.get("type", ""), "EVENT_TYPE_").lower(),
        level=_strip(raw.get("level", ""), "LOG_LEVEL_").lower(),
        message=raw.get("message", ""),
        metrics=_finite(raw.get("metrics", {})),
        state=_strip(raw.get("state", ""), _STATE_PREFIX) if has_state else None,
        task_id=raw.get("task_id", ""),
    )


def is_terminal(state: int) -> bool:
    return state in TERMINAL_STATES


def state_name(name: str) -> str:
    """The `TaskState` enum name for a REST state name (`running`, `RUNNING` or
    `TASK_STATE_RUNNING`); 400 for anything else."""
    key = name.strip().upper()
    key = key if key.startswith(_STATE_PREFIX) else _STATE_PREFIX + key
    names = [n for n, _ in task_pb2.TaskState.items() if not n.endswith("UNSPECIFIED")]
    if key not in names:
        choices = ", ".join(n[len(_STATE_PREFIX) :] for n in names)
        raise HTTPException(400, f"unknown state {name!r}; choose from {choices}")
    return key


def _limits(limits: resources_pb2.ConcurrencyLimits) -> LimitsOut:
    return LimitsOut(training=limits.training, inference=limits.inference)


def limits_json(limits: Any) -> dict[str, LimitsOut]:
    """`max_concurrent` of a GetResources or UpdateLimits response."""
    return {device: _limits(value) for device, value in limits.items()}


def resources_json(response: resource_service_pb2.GetResourcesResponse) -> ResourcesOut:
    return ResourcesOut(
        device_usage={
            device: DeviceUsageOut(
                training=usage.training,
                inference=usage.inference,
                queued_training=usage.queued_training,
                queued_inference=usage.queued_inference,
            )
            for device, usage in response.device_usage.items()
        },
        gpu_memory_info={
            name: GpuMemoryOut(
                total_gb=gpu.total_gb,
                allocated_gb=gpu.allocated_gb,
                free_gb=gpu.free_gb,
                device=gpu.device,
                name=gpu.name,
                estimated_gb=gpu.estimated_gb,
            )
            for name, gpu in response.gpu_memory_info.items()
        },
        max_concurrent=limits_json(response.max_concurrent),
        preemptions_total=response.preemptions_total,
    )
