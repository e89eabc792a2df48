"""The v2 REST routes of `tandem.v1.ModelService`: `POST /api/v2/models/export`, its body
and its answer (kept here, apart from the task bodies of `schemas.py`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from pydantic import AfterValidator, BaseModel, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

from server.gateway.convert import finite, message
from server.gateway.deps import RpcDep
from server.gateway.errors import error_responses
from server.gateway.fields import MAX_TEXT, OUT_OF_RANGE, REFERENCE_HELP, Body, ModelReference
from tandem.contract import EXPORT_FORMATS
from tandem.v1 import model_pb2, model_service_pb2

_NAMES = ", ".join(f"`{name}`" for name in EXPORT_FORMATS)


def _known_format(value: str) -> str:
    name = value.strip().lower()
    if name not in EXPORT_FORMATS:
        sentence = f"unknown format {value!r}; choose one of {', '.join(EXPORT_FORMATS)}"
        raise PydanticCustomError(OUT_OF_RANGE, "{sentence}", {"sentence": sentence})
    return name


ExportFormatName = Annotated[
    str,
    AfterValidator(_known_format),
    WithJsonSchema({"type": "string", "enum": list(EXPORT_FORMATS)}),
]


class ExportBody(Body):
    """A trained model to export (`POST /api/v2/models/export`). Exactly one of `task_id`,
    `model_path` and `model_name` names the model."""

    task_id: str | None = Field(
        None,
        max_length=MAX_TEXT,
        description="A SUCCEEDED training task whose final model to export; the file is "
        "written beside it. Give this, `model_path` or `model_name`. Default: none.",
    )
    model_path: str | None = Field(
        None,
        max_length=MAX_TEXT,
        description="A model file written by Tandem, under the data dir or a model root; "
        "the file is written under the data dir's `exports/`. Give this, `task_id` or "
        "`model_name`. Default: none.",
    )
    model_name: ModelReference | None = Field(
        None,
        description=f"{REFERENCE_HELP} The file is written beside its task's model. Give "
        "this, `task_id` or `model_path`. Default: none.",
        examples=["cats@production"],
    )
    format: ExportFormatName = Field(
        description=f"{_NAMES} (any case). Required.", examples=["onnx"]
    )


class ExportOut(BaseModel):
    """The exported file, checked against PyTorch."""

    path: str = Field(description="The exported file, on the server's filesystem.")
    size_bytes: int = Field(description="Its size in bytes.")
    format: str = Field(description=f"{_NAMES}.")
    max_abs_diff: float | None = Field(
        description="Largest absolute difference between the export's logits and PyTorch's "
        "on the check's generated images; at most 1e-4."
    )
    opset: int = Field(description="ONNX operator set (18 or higher); 0 for TorchScript.")
    model_path: str = Field(description="The model file that was exported.")
    task_id: str = Field(description="The training task it came from; empty if by path.")
    model_name: str = Field(
        description="The registry version exported (`name/version`) when named by one; else empty."
    )
    export_seconds: float | None = Field(description="Seconds the export and its check took.")


async def export_model(body: ExportBody, rpc: RpcDep) -> ExportOut:
    """Exports a trained model to ONNX (input `images`, output `logits`, dynamic batch) or
    TorchScript, and answers once the file has matched PyTorch on generated images. Takes
    seconds to minutes; at most two run at once, later ones wait. Exporting again replaces
    the file."""
    fields = body.model_dump(exclude_none=True)
    fields["format"] = model_pb2.ExportFormat.Value(f"EXPORT_FORMAT_{body.format.upper()}")
    response = await rpc.export_model(message(model_service_pb2.ExportModelRequest, fields))
    return ExportOut(
        path=response.path,
        size_bytes=response.size_bytes,
        format=body.format,
        max_abs_diff=finite(response.max_abs_diff),
        opset=response.opset,
        model_path=response.model_path,
        task_id=response.task_id,
        export_seconds=finite(response.export_seconds),
        model_name=response.model_name,
    )


def add_routes(router: APIRouter) -> None:
    """Adds the model operations to the v2 `router`."""
    router.add_api_route(
        "/models/export",
        export_model,
        methods=["POST"],
        response_model=ExportOut,
        responses=error_responses(),
        summary="Export a trained model to ONNX or TorchScript",
    )
