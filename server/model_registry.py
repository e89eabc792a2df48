"""The model registry: names, their numbered versions, and aliases that point at them.

A training submitted with a `model_name` publishes its model when it SUCCEEDS, as the
next version (1, 2, 3, ...) of that name; numbers are never reused. Requests name a
version by reference: `name` (the latest), `name/3`, or `name@alias`. A version points
at its task's model file, which belongs to the task: deleting the version forgets it,
the file stays. Everything lives in memory, read once from the store at start and
written through it on every change, so resolving a reference costs no disk read.

Errors are `ServiceError`s: INVALID_ARGUMENT for a malformed name, alias or reference,
NOT_FOUND (with what does exist) for an unknown one, FAILED_PRECONDITION for a version
still aliased or served. All methods run on the event loop thread.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engines.artifact_info import read_info
from server.errors import checked, failed_precondition, invalid_argument, not_found
from server.models import ModelInfo
from server.records import TaskKind, TaskRecord
from server.registry_store import AliasRow, RegistryStore, Triple, VersionRow
from tandem import contract
from tandem.contract import ModelReference, OutOfRange

if TYPE_CHECKING:
    from server.journal import Journal

log = logging.getLogger(__name__)


# How many names, versions or aliases a NOT_FOUND sentence lists before "...".
_LISTED = 20


@dataclass(frozen=True)
class ModelVersion:
    """One version of a name, as it is now (its aliases included)."""

    name: str
    version: int
    # The model file (the source task's `model.pt`) and the task that trained it.
    path: str
    task_id: str
    architecture: str
    classes: tuple[str, ...]
    image_size: int
    # The input normalisation the model was trained with, per RGB channel.
    mean: Triple
    std: Triple
    # The model file's own metrics (those of the epoch it kept).
    metrics: Mapping[str, float]
    size_bytes: int
    create_time: float
    aliases: tuple[str, ...]

    @property
    def reference(self) -> str:
        """`name/version`: the reference that names this version and no other."""
        return f"{self.name}/{self.version}"

    def info(self) -> ModelInfo:
        """What Infer and Predict need to run it."""
        return ModelInfo(self.path, self.task_id, self.architecture, self.classes, self.image_size)


class ModelRegistry:
    """Published models by name; `served_paths` says which model files are loaded for
    serving now (a served version cannot be deleted)."""

    def __init__(self, store: RegistryStore, served_paths: Callable[[], Collection[str]]) -> None:
        self._store = store
        self._served_paths = served_paths
        self._versions: dict[str, dict[int, VersionRow]] = {}
        self._aliases: dict[str, dict[str, AliasRow]] = {}
        versions, aliases = store.load()
        for row in versions:
            self._versions.setdefault(row.name, {})[row.version] = row
        for alias in aliases:
            self._aliases.setdefault(alias.name, {})[alias.alias] = alias

    # -- reading ---------------------------------------------------------------------

    def names(self) -> list[str]:
        """Every name with at least one version, sorted."""
        return sorted(name for name, versions in self._versions.items() if versions)

    def has(self, name: str) -> bool:
        return bool(self._versions.get(name))

    def versions(self, name: str) -> list[ModelVersion]:
        """The name's versions, oldest first; NOT_FOUND for an unknown name."""
        rows = self._rows(name)
        return [self._snapshot(rows[v]) for v in sorted(rows)]

    def aliases(self, name: str) -> dict[str, int]:
        """The name's aliases and the versions they point at; NOT_FOUND for an unknown name."""
        self._rows(name)
        return {a: row.version for a, row in sorted(self._aliases.get(name, {}).items())}

    def resolve_version(self, name: str, version: int | None) -> ModelVersion:
        """Version `version` of `name`, or its latest for None; NOT_FOUND, naming the
        versions there are, for an unknown name or version."""
        rows = self._rows(name)
        if version is None:
            return self._snapshot(rows[max(rows)])
        row = rows.get(version)
        if row is None:
            raise not_found(
                f"model {name!r} has no version {version}; its versions are {_listed(rows)}"
            )
        return self._snapshot(row)

    def resolve(self, reference: str | ModelReference, field: str = "model_name") -> ModelVersion:
        """The version a reference (`name`, `name/3`, `name@alias`) means now.
        INVALID_ARGUMENT for a malformed one, NOT_FOUND for an unknown part."""
        ref = reference if isinstance(reference, ModelReference) else _parsed(reference, field)
        if ref.alias is None:
            return self.resolve_version(ref.name, ref.version)
        rows = self._rows(ref.name)
        alias = self._aliases.get(ref.name, {}).get(ref.alias)
        if alias is None:
            raise not_found(
                f"model {ref.name!r} has no alias {ref.alias!r}; {self._alias_list(ref.name)}"
            )
        return self._snapshot(rows[alias.version])

    # -- publishing --------------------------------------------------------------------

    def publish(self, name: str, task_id: str, path: str) -> ModelVersion:
        """Stores the model file `path` of task `task_id` as the next version of `name`
        (the version it already is, if the task published before a restart). Raises
        OutOfRange for a malformed name, ArtifactError or OSError for a file that cannot
        be read, sqlite3.Error if the store refuses. Reads the file's description (a few
        KB, never its weights) on the calling thread."""
        contract.check_model_name(name)
        earlier = self._store.version_of_task(task_id)
        if earlier is not None:
            return self._snapshot(earlier)
        artifact = read_info(path)
        row = self._store.add_version(
            VersionRow(
                name=name,
                version=0,
                task_id=task_id,
                path=path,
                architecture=artifact.architecture,
                classes=artifact.classes,
                image_size=artifact.image_size,
                mean=artifact.mean,
                std=artifact.std,
                metrics=dict(artifact.metrics),
                size_bytes=os.path.getsize(path),
                create_time=time.time(),
            )
        )
        self._versions.setdefault(name, {})[row.version] = row
        return self._snapshot(row)

    def publish_model_of(self, task: TaskRecord, journal: Journal) -> None:
        """Publishes a SUCCEEDED training task's model under its `model_name`, if it has
        one, and says so in its log. Never raises: a model that cannot be published
        leaves the task SUCCEEDED, with a warning in its log saying why."""
        name = str(task.params.get("model_name") or "")
        if task.kind is not TaskKind.TRAINING or not name:
            return
        try:
            published = self.publish(name, task.task_id, task.model_path)
        except Exception as exc:
            log.exception("task %s: could not publish its model as %r", task.task_id, name)
            journal.event(
                task,
                "log",
                f"could not publish the model as {name!r}: {exc}; the task has succeeded "
                "and its model is still usable by task_id",
                level="warning",
            )
            return
        journal.event(task, "log", f"published the model as {published.reference}")

    # -- aliases and deletes -----------------------------------------------------------

    def set_alias(self, name: str, alias: str, version: int) -> tuple[ModelVersion, int]:
        """Points `alias` of `name` at `version` (creating or moving it); returns that
        version and the one it pointed at before (0 for a new alias)."""
        alias = checked(contract.check_alias, alias)
        self.resolve_version(name, checked(contract.check_version, version))  # NOT_FOUND
        before = self._aliases.get(name, {}).get(alias)
        row = AliasRow(name, alias, version, time.time())
        self._store.set_alias(row)
        self._aliases.setdefault(name, {})[alias] = row
        return self.resolve_version(name, version), before.version if before else 0

    def delete_alias(self, name: str, alias: str) -> int:
        """Removes `alias` of `name`; returns the version it pointed at."""
        self._rows(name)
        alias = checked(contract.check_alias, alias)
        found = self._aliases.get(name, {}).get(alias)
        if found is None:
            raise not_found(f"model {name!r} has no alias {alias!r}; {self._alias_list(name)}")
        self._store.delete_alias(name, alias)
        del self._aliases[name][alias]
        return found.version

    def delete_version(self, name: str, version: int) -> ModelVersion:
        """Forgets a version (its task's model file stays). FAILED_PRECONDITION while an
        alias points at it or while it is loaded for serving."""
        doomed = self.resolve_version(name, checked(contract.check_version, version))
        if doomed.aliases:
            pointing = ", ".join(repr(a) for a in doomed.aliases)
            raise failed_precondition(
                f"version {version} of model {name!r} is aliased ({pointing}); move or delete "
                "the alias first"
            )
        if doomed.path in self._served_paths():
            raise failed_precondition(
                f"version {version} of model {name!r} is being served; it can be deleted once "
                "it is unloaded (after it has been idle a while)"
            )
        self._store.delete_version(name, version)
        del self._versions[name][version]
        return doomed

    # -- internals ---------------------------------------------------------------------

    def _rows(self, name: str) -> dict[int, VersionRow]:
        """The name's versions; INVALID_ARGUMENT for a malformed name, NOT_FOUND for an
        unknown one."""
        rows = self._versions.get(name)
        if not rows:
            checked(lambda text: contract.check_model_name(text, "name"), name)
            names = self.names()
            there = (
                f"the registry holds {_listed(names)}"
                if names
                else "the registry is empty (a training publishes its model with model_name)"
            )
            raise not_found(f"model {name!r} does not exist; {there}")
        return rows

    def _alias_list(self, name: str) -> str:
        aliases = self._aliases.get(name, {})
        if not aliases:
            return "it has no aliases"
        shown = [f"{a} (version {row.version})" for a, row in sorted(aliases.items())]
        return f"its aliases are {_listed(shown)}"

    def _snapshot(self, row: VersionRow) -> ModelVersion:
        aliases = tuple(
            sorted(
                a for a, r in self._aliases.get(row.name, {}).items() if r.version == row.version
            )
        )
        return ModelVersion(
            name=row.name,
            version=row.version,
            path=row.path,
            task_id=row.task_id,
            architecture=row.architecture,
            classes=row.classes,
            image_size=row.image_size,
            mean=row.mean,
            std=row.std,
            metrics=row.metrics,
            size_bytes=row.size_bytes,
            create_time=row.create_time,
            aliases=aliases,
        )


def _parsed(reference: str, field: str) -> ModelReference:
    try:
        return contract.parse_model_reference(reference, field)
    except OutOfRange as exc:
        raise invalid_argument(str(exc)) from None


def _listed(items: Collection[object]) -> str:
    shown = [str(item) for item in list(items)[:_LISTED]]
    more = len(items) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")
