"""The v2 REST routes of the model registry (`tandem.v1.ModelService`): names and their
versions, aliases, deletes; their bodies and answers are kept here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Path
from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import BaseModel, Field

from server.gateway.convert import finite, message
from server.gateway.deps import RpcDep
from server.gateway.errors import error_responses
from server.gateway.fields import Body, contract_check
from tandem import contract
from tandem.contract import MAX_VERSION
from tandem.v1 import model_pb2, model_service_pb2

NamePath = Annotated[str, Path(description="A name in the registry, for example `cats`.")]
AliasPath = Annotated[
    str,
    Path(
        description="An alias, for example `production`: lower-case letters, digits, `-`, "
        "`_` and `.`, starting with a letter; not `latest`."
    ),
]
VersionPath = Annotated[
    int, Path(ge=1, le=MAX_VERSION, description="One of the name's versions, from 1.")
]
Version = Annotated[int, contract_check(contract.check_version)]


class AliasBody(Body):
    """Where an alias is to point (`PUT /api/v2/models/{name}/aliases/{alias}`)."""

    version: Version = Field(
        description=f"A version the name has, 1..{MAX_VERSION}. Required.",
        json_schema_extra={"minimum": 1, "maximum": MAX_VERSION},
        examples=[3],
    )


class ModelVersionOut(BaseModel):
    """One published version of a name."""

    name: str = Field(description="The name it is a version of.")
    version: int = Field(description="Its number, from 1; `name/<version>` refers to it.")
    task_id: str = Field(description="The training task whose model it is.")
    model_path: str = Field(description="The model file (the task's; it stays on delete).")
    architecture: str = Field(description="torchvision architecture, for example `resnet18`.")
    classes: list[str] = Field(description="Class names, in the order of the model's outputs.")
    image_size: int = Field(description="Side in pixels images are resized to.")
    metrics: dict[str, float | None] = Field(
        description="The model file's metrics (the epoch it kept); null where not finite."
    )
    size_bytes: int = Field(description="The model file's size in bytes.")
    create_time: str | None = Field(description="When it was published, ISO-8601.")
    aliases: list[str] = Field(description="The aliases pointing at it, sorted.")


class ModelOut(BaseModel):
    """A name in the registry: its aliases, its newest version and (from `GET
    /api/v2/models/{name}`) every version."""

    name: str = Field(description="The name.")
    latest_version: int = Field(description="The newest version; a bare name means it.")
    version_count: int = Field(description="How many versions it has.")
    aliases: dict[str, int] = Field(description="Alias -> the version it points at.")
    create_time: str | None = Field(description="When its oldest version was published.")
    update_time: str | None = Field(description="When its newest version was published.")
    latest: ModelVersionOut = Field(description="The newest version.")
    versions: list[ModelVersionOut] = Field(
        description="Every version, oldest first; empty in the list of names."
    )


class ModelListOut(BaseModel):
    """Every name in the registry."""

    models: list[ModelOut] = Field(description="Sorted by name, without `versions`.")


class AliasSetOut(BaseModel):
    """Where the alias points now."""

    version: ModelVersionOut = Field(description="The version the alias points at now.")
    previous_version: int = Field(description="The version it pointed at before; 0 if new.")


class AliasDeletedOut(BaseModel):
    """The alias is gone; the version stays."""

    name: str = Field(description="The name.")
    alias: str = Field(description="The alias removed.")
    version: int = Field(description="The version it pointed at.")


class VersionDeletedOut(BaseModel):
    """The version is gone from the registry; its model file stays with its task."""

    version: ModelVersionOut = Field(description="The version as it was.")


def _time(stamp: Timestamp) -> str | None:
    return stamp.ToJsonString() if stamp.seconds or stamp.nanos else None


def version_json(version: model_pb2.ModelVersion) -> ModelVersionOut:
    return ModelVersionOut(
        name=version.name,
        version=version.version,
        task_id=version.task_id,
        model_path=version.model_path,
        architecture=version.architecture,
        classes=list(version.classes),
        image_size=version.image_size,
        metrics={key: finite(value) for key, value in version.metrics.items()},
        size_bytes=version.size_bytes,
        create_time=_time(version.create_time),
        aliases=list(version.aliases),
    )


def model_json(model: model_pb2.Model) -> ModelOut:
    return ModelOut(
        name=model.name,
        latest_version=model.latest_version,
        version_count=model.version_count,
        aliases=dict(model.aliases),
        create_time=_time(model.create_time),
        update_time=_time(model.update_time),
        latest=version_json(model.latest),
        versions=[version_json(v) for v in model.versions],
    )


async def list_models(rpc: RpcDep) -> ModelListOut:
    """Every name in the registry, sorted, each with its newest version and aliases."""
    response = await rpc.list_models()
    return ModelListOut(models=[model_json(m) for m in response.models])


async def get_model(name: NamePath, rpc: RpcDep) -> ModelOut:
    """A name with every version (source task, architecture, classes, image size,
    metrics, size, when published) and its aliases."""
    return model_json((await rpc.get_model(name)).model)


async def set_alias(name: NamePath, alias: AliasPath, body: AliasBody, rpc: RpcDep) -> AliasSetOut:
    """Points an alias at a version, creating the alias or moving it. References
    `name@alias` follow it from the next request on."""
    request = message(
        model_service_pb2.SetModelAliasRequest,
        {"name": name, "alias": alias, "version": body.version},
    )
    response = await rpc.set_model_alias(request)
    return AliasSetOut(
        version=version_json(response.version), previous_version=response.previous_version
    )


async def delete_alias(name: NamePath, alias: AliasPath, rpc: RpcDep) -> AliasDeletedOut:
    """Removes an alias; the version it pointed at stays."""
    request = message(model_service_pb2.DeleteModelAliasRequest, {"name": name, "alias": alias})
    response = await rpc.delete_model_alias(request)
    return AliasDeletedOut(name=name, alias=alias, version=response.version)


async def delete_version(name: NamePath, version: VersionPath, rpc: RpcDep) -> VersionDeletedOut:
    """Removes a version from the registry (its task's model file stays). 409 while an
    alias points at it or while it is being served."""
    request = message(
        model_service_pb2.DeleteModelVersionRequest, {"name": name, "version": version}
    )
    response = await rpc.delete_model_version(request)
    return VersionDeletedOut(version=version_json(response.version))


def add_routes(router: APIRouter) -> None:
    """Adds the registry's operations to the v2 `router`."""
    errors = error_responses()
    routes: list[tuple[str, Callable[..., Any], str, type[BaseModel], str]] = [
        ("/models", list_models, "GET", ModelListOut, "List the named models"),
        ("/models/{name}", get_model, "GET", ModelOut, "Show a named model and its versions"),
        ("/models/{name}/aliases/{alias}", set_alias, "PUT", AliasSetOut, "Set an alias"),
        (
            "/models/{name}/aliases/{alias}",
            delete_alias,
            "DELETE",
            AliasDeletedOut,
            "Delete an alias",
        ),
        (
            "/models/{name}/versions/{version}",
            delete_version,
            "DELETE",
            VersionDeletedOut,
            "Delete a version",
        ),
    ]
    for path, endpoint, method, answer, summary in routes:
        router.add_api_route(
            path,
            endpoint,
            methods=[method],
            response_model=answer,
            responses=errors,
            summary=summary,
        )
