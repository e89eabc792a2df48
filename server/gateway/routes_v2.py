"""The v2 REST API (the concurrent v2.2 service's surface): everything of v1, plus the task
list, cancel, resources and their limits, and online prediction from an uploaded image.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, Query, UploadFile

from server.gateway import routes_models, routes_registry, routes_v1
from server.gateway.convert import (
    finite,
    limits_json,
    message,
    resources_json,
    state_name,
    task_json,
)
from server.gateway.deps import RpcDep, SettingsDep
from server.gateway.errors import error_responses
from server.gateway.fields import MAX_TEXT, REFERENCE_HELP, ModelReference, Priority, TopK
from server.gateway.responses import (
    LimitsConfigOut,
    PredictionOut,
    PredictOut,
    ResourcesOut,
    TaskListOut,
    TaskOut,
)
from server.gateway.schemas import LimitsConfigBody
from tandem.contract import (
    DEFAULT_PAGE_SIZE,
    DEFAULT_PRIORITY,
    DEFAULT_TOP_K,
    MAX_PAGE_SIZE,
    MAX_PRIORITY,
    MAX_TOP_K,
    MIN_PRIORITY,
)
from tandem.v1 import inference_service_pb2, resource_service_pb2, task_pb2, task_service_pb2

MAX_LIST = MAX_PAGE_SIZE
DEFAULT_LIST = DEFAULT_PAGE_SIZE


async def list_tasks(
    rpc: RpcDep,
    state: Annotated[
        list[str] | None,
        Query(
            description="Only tasks in these states: `queued`, `running`, `succeeded`, "
            "`failed`, `cancelled`, `preempted` (any case). Repeat the parameter or separate "
            "with commas. Default: every state."
        ),
    ] = None,
    limit: Annotated[
        int,
        Query(
            ge=1,
            le=MAX_LIST,
            description=f"Most tasks of each kind to return, newest first, 1..{MAX_LIST}. "
            f"Default {DEFAULT_LIST}. The totals count every matching task.",
        ),
    ] = DEFAULT_LIST,
    page_token: Annotated[
        str,
        Query(
            max_length=MAX_TEXT,
            description="`next_page_token` of the previous page, with the same `state`: "
            "each kind continues after its own last task. Default: the first page.",
        ),
    ] = "",
) -> TaskListOut:
    """Tasks split by kind, newest first, with totals (the seed's shape), a page at a time:
    the lists and the totals come from one read."""
    names = [part for value in state or () for part in value.split(",") if part.strip()]
    states = sorted({state_name(name) for name in names})
    page = await rpc.list_tasks(
        task_service_pb2.ListTasksRequest(
            states=states, page_size=limit, page_token=page_token, page_per_kind=True
        )
    )
    totals = {total.kind: total.total_size for total in page.kind_totals}
    training, inference = task_pb2.TASK_KIND_TRAINING, task_pb2.TASK_KIND_INFERENCE
    return TaskListOut(
        training_tasks=[task_json(t) for t in page.tasks if t.kind == training],
        inference_tasks=[task_json(t) for t in page.tasks if t.kind == inference],
        total_training=totals.get(training, 0),
        total_inference=totals.get(inference, 0),
        next_page_token=page.next_page_token,
    )


async def cancel_task(task_id: routes_v1.TaskIdPath, rpc: RpcDep) -> TaskOut:
    """Cancels a task: a queued one at once (`CANCELLED`), a running one at its next batch
    (still `RUNNING` in this answer; its log ends with `CANCELLED`). 409 if it has ended."""
    return task_json(await rpc.cancel_task(task_id))


async def resources(rpc: RpcDep) -> ResourcesOut:
    """Per device the running and queued tasks, the limits in force, and per GPU its memory."""
    return resources_json(await rpc.get_resources())


async def resources_config(body: LimitsConfigBody, rpc: RpcDep) -> LimitsConfigOut:
    """Changes concurrency limits at run time. Growing a limit admits waiting tasks at once;
    shrinking one stops no running task. Applied whole or not at all."""
    request = message(resource_service_pb2.UpdateLimitsRequest, body.model_dump(exclude_none=True))
    response = await rpc.update_limits(request)
    return LimitsConfigOut(max_concurrent=limits_json(response.max_concurrent))


async def _read_upload(upload: UploadFile, limit: int) -> bytes:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(413, f"the image is larger than {limit} bytes")
    return data


async def predict(
    rpc: RpcDep,
    settings: SettingsDep,
    file: Annotated[
        UploadFile | None, File(description="The image, PNG or JPEG. Give this or `image`.")
    ] = None,
    image: Annotated[
        UploadFile | None, File(description="The image under another name, as some clients send.")
    ] = None,
    task_id: Annotated[
        str | None,
        Form(
            max_length=MAX_TEXT,
            description="A SUCCEEDED training task whose model to use. Give this, "
            "`model_path` or `model_name`. Default: none.",
        ),
    ] = None,
    model_path: Annotated[
        str | None,
        Form(
            max_length=MAX_TEXT,
            description="A model file written by Tandem. Give this, `task_id` or `model_name`. "
            "Default: none.",
        ),
    ] = None,
    model_name: Annotated[
        ModelReference | None,
        Form(description=f"{REFERENCE_HELP} Give this, `task_id` or `model_path`. Default: none."),
    ] = None,
    top_k: Annotated[
        TopK | None,
        Form(
            description=f"Labels to return, 1..{MAX_TOP_K}, capped at the number of classes. "
            f"Default {DEFAULT_TOP_K}.",
        ),
    ] = None,
    device: Annotated[
        str | None,
        Form(
            max_length=MAX_TEXT,
            description="`cpu`, `cuda`, `cuda:N` or `auto`. Default `auto`.",
        ),
    ] = None,
    priority: Annotated[
        Priority | None,
        Form(
            description=f"{MIN_PRIORITY} (most urgent) .. {MAX_PRIORITY}. "
            f"Default {DEFAULT_PRIORITY}.",
        ),
    ] = None,
) -> PredictOut:
    """Classifies one uploaded image with a trained model and answers directly; admitted by
    priority through the device's inference slots."""
    upload = file or image
    if upload is None:
        raise HTTPException(422, "an image file is required in the form field `file`")
    fields = {
        "image": await _read_upload(upload, settings.max_upload_bytes),
        "task_id": task_id,
        "model_path": model_path,
        "model_name": model_name,
        "top_k": top_k,
        "device": device,
        "priority": priority,
    }
    request = message(
        inference_service_pb2.PredictRequest, {k: v for k, v in fields.items() if v is not None}
    )
    response = await rpc.predict(request)
    return PredictOut(
        predictions=[
            PredictionOut(label=p.label, score=finite(p.score), index=p.index)
            for p in response.predictions
        ],
        device=response.device,
        model_name=response.model_name,
    )


def add_routes(router: APIRouter) -> None:
    """Adds the v2-only operations to `router`."""
    errors = error_responses()
    router.add_api_route(
        "/tasks",
        list_tasks,
        methods=["GET"],
        response_model=TaskListOut,
        responses=errors,
        summary="List tasks",
    )
    router.add_api_route(
        "/tasks/{task_id}/cancel",
        cancel_task,
        methods=["POST"],
        response_model=TaskOut,
        responses=errors,
        summary="Cancel a task",
    )
    router.add_api_route(
        "/resources",
        resources,
        methods=["GET"],
        response_model=ResourcesOut,
        responses=errors,
        summary="Devices, usage, limits and GPU memory",
    )
    router.add_api_route(
        "/resources/config",
        resources_config,
        methods=["POST"],
        response_model=LimitsConfigOut,
        responses=errors,
        summary="Change concurrency limits",
    )
    router.add_api_route(
        "/predict",
        predict,
        methods=["POST"],
        response_model=PredictOut,
        responses=errors,
        summary="Classify one uploaded image",
    )


router = APIRouter(prefix="/api/v2", tags=["v2"])
routes_v1.add_routes(router)
add_routes(router)
routes_models.add_routes(router)
routes_registry.add_routes(router)
