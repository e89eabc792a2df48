"""The model registry's tables, in the tasks' SQLite file: each name's versions and
aliases, kept across restarts.

Its own connection to the file the task store opens (WAL mode, so neither blocks the
other); used from the server's event loop thread only, each call one short transaction.
The registry keeps what it reads here in memory and writes every change here first.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS model_names (
    name         TEXT PRIMARY KEY,
    -- The highest version ever given: numbers are never reused, even after a delete.
    last_version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS model_versions (
    name         TEXT NOT NULL,
    version      INTEGER NOT NULL,
    -- A task publishes once: a task run again after a restart finds its version here.
    task_id      TEXT NOT NULL UNIQUE,
    path         TEXT NOT NULL,
    architecture TEXT NOT NULL,
    classes      TEXT NOT NULL,
    image_size   INTEGER NOT NULL,
    mean         TEXT NOT NULL,
    std          TEXT NOT NULL,
    metrics      TEXT NOT NULL,
    size_bytes   INTEGER NOT NULL,
    create_time  REAL NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS model_aliases (
    name        TEXT NOT NULL,
    alias       TEXT NOT NULL,
    version     INTEGER NOT NULL,
    update_time REAL NOT NULL,
    PRIMARY KEY (name, alias)
);
"""

_VERSION_COLUMNS = (
    "name, version, task_id, path, architecture, classes, image_size, mean, std, metrics, "
    "size_bytes, create_time"
)

Triple = tuple[float, float, float]


@dataclass(frozen=True)
class VersionRow:
    """One published version, as stored."""

    name: str
    version: int
    task_id: str
    path: str
    architecture: str
    classes: tuple[str, ...]
    image_size: int
    mean: Triple
    std: Triple
    metrics: Mapping[str, float]
    size_bytes: int
    create_time: float


@dataclass(frozen=True)
class AliasRow:
    name: str
    alias: str
    version: int
    update_time: float


class RegistryStore:
    """Model names, versions and aliases in SQLite."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are opened explicitly where they are needed.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def load(self) -> tuple[list[VersionRow], list[AliasRow]]:
        """Every version (by name, then version) and every alias."""
        versions = self._db.execute(
            f"SELECT {_VERSION_COLUMNS} FROM model_versions ORDER BY name, version"
        ).fetchall()
        aliases = self._db.execute(
            "SELECT name, alias, version, update_time FROM model_aliases ORDER BY name, alias"
        ).fetchall()
        return (
            [_version(row) for row in versions],
            [AliasRow(str(n), str(a), int(v), float(t)) for n, a, v, t in aliases],
        )

    def version_of_task(self, task_id: str) -> VersionRow | None:
        row = self._db.execute(
            f"SELECT {_VERSION_COLUMNS} FROM model_versions WHERE task_id=?", (task_id,)
        ).fetchone()
        return _version(row) if row else None

    def add_version(self, row: VersionRow) -> VersionRow:
        """Stores `row` as the next version of its name (its own `version` is ignored);
        returns it with the version it got."""
        with self._db:  # one transaction: the number taken and the row, or neither
            self._db.execute("BEGIN IMMEDIATE")
            found = self._db.execute(
                "SELECT last_version FROM model_names WHERE name=?", (row.name,)
            ).fetchone()
            version = (int(found[0]) if found else 0) + 1
            self._db.execute(
                "INSERT INTO model_names (name, last_version) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET last_version=excluded.last_version",
                (row.name, version),
            )
            stored = VersionRow(**{**row.__dict__, "version": version})
            self._db.execute(
                f"INSERT INTO model_versions ({_VERSION_COLUMNS}) VALUES ({', '.join('?' * 12)})",
                _version_values(stored),
            )
        return stored

    def set_alias(self, row: AliasRow) -> None:
        self._db.execute(
            "INSERT INTO model_aliases (name, alias, version, update_time) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(name, alias) DO UPDATE SET version=excluded.version, "
            "update_time=excluded.update_time",
            (row.name, row.alias, row.version, row.update_time),
        )

    def delete_alias(self, name: str, alias: str) -> None:
        self._db.execute("DELETE FROM model_aliases WHERE name=? AND alias=?", (name, alias))

    def delete_version(self, name: str, version: int) -> None:
        self._db.execute("DELETE FROM model_versions WHERE name=? AND version=?", (name, version))


def _version_values(row: VersionRow) -> tuple[object, ...]:
    return (
        row.name,
        row.version,
        row.task_id,
        row.path,
        row.architecture,
        json.dumps(list(row.classes)),
        row.image_size,
        json.dumps(list(row.mean)),
        json.dumps(list(row.std)),
        json.dumps(dict(row.metrics)),
        row.size_bytes,
        row.create_time,
    )


def _triple(text: object) -> Triple:
    a, b, c = json.loads(str(text))
    return (float(a), float(b), float(c))


def _version(row: Sequence[object]) -> VersionRow:
    name, version, task_id, path, arch, classes, size, mean, std, metrics, nbytes, created = row
    return VersionRow(
        name=str(name),
        version=int(version),  # type: ignore[call-overload]
        task_id=str(task_id),
        path=str(path),
        architecture=str(arch),
        classes=tuple(json.loads(str(classes))),
        image_size=int(size),  # type: ignore[call-overload]
        mean=_triple(mean),
        std=_triple(std),
        metrics={str(k): float(v) for k, v in json.loads(str(metrics)).items()},
        size_bytes=int(nbytes),  # type: ignore[call-overload]
        create_time=float(created),  # type: ignore[arg-type]
    )
