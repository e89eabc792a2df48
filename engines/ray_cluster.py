"""The Ray cluster as Tandem sees it: connecting to it, naming its nodes, reading their
GPUs' memory.

Connecting: the address is `auto` (the cluster `ray start --head` started on this
machine), `HOST:PORT` (a head elsewhere), or `local` (a private one-node Ray started
inside the server, in a short temp dir under /tmp that is removed at close). Ray's usage
statistics are off and no dashboard is started.

Node names: `node-1`, `node-2`, ... in the order this server first sees the nodes (the
head first, then the others in the order Ray lists them), so a person can tell them
apart and device names (`node-2/cpu`) stay short. The names are kept in a small JSON
file (`ray-nodes.json` in the data dir), so a restarted server on the same cluster calls
each node by the same name: limits saved per device and tasks queued for `node-2/cpu`
keep their meaning. A machine that leaves and rejoins is a new Ray node (a new node id)
and gets a new name; a name is never given twice.

GPU memory: NVML readings only work on the GPU's own machine, so each node with GPUs
runs a `GpuProbe` actor that holds no CPU; `refresh` asks every probe.

Every method that talks to Ray blocks: the server calls them from a thread.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from engines.jobs import first_line
from engines.ray_actor import GpuProbe

log = logging.getLogger(__name__)

_HEAD_RESOURCE = "node:__internal_head__"
# The Ray resources one of Tandem's actors holds: a token share, so that Tandem's limits
# (which may be raised at run time) and not Ray's bookkeeping decide how many jobs share
# a device. A node without that much of a resource has no such device for Tandem.
CPU_SHARE = 0.01
GPU_SHARE = 0.01
# A probe that does not answer within this is skipped for one refresh.
_PROBE_TIMEOUT_S = 2.0
# How long the head's GCS port of a HOST:PORT address may take to accept a connection
# before the start gives up (Ray itself would retry for many minutes).
_REACH_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class RayNode:
    """One live node of the cluster, as last read."""

    name: str
    node_id: str
    address: str
    hostname: str
    cpus: float
    gpus: int
    head: bool

    @property
    def devices(self) -> tuple[str, ...]:
        """Its devices as the node itself names them: "cpu", then "cuda:0", ...

        No "cpu" on a node that offers Ray less CPU than an actor's share (`ray start
        --head --num-cpus=0`, the usual head of a production cluster): an actor could
        never be placed there. Likewise no GPUs below a GPU share."""
        cpu = ("cpu",) if self.cpus >= CPU_SHARE else ()
        gpus = self.gpus if self.gpus >= GPU_SHARE else 0
        return (*cpu, *(f"cuda:{index}" for index in range(gpus)))

    def describe(self) -> str:
        """For people: "node-2 (10.0.0.5)"."""
        return f"{self.name} ({self.address})"


@dataclass(frozen=True)
class GpuReading:
    """One GPU of one node, read by NVML on that node, in bytes."""

    node: str
    index: int
    name: str
    total_bytes: int
    used_bytes: int
    free_bytes: int


class RayCluster:
    """A connection to a Ray cluster and Tandem's names for its nodes."""

    def __init__(self, address: str = "auto", *, names_file: Path | None = None) -> None:
        self.address = address
        self._names_file = names_file
        self._names: dict[str, str] = {}  # node id -> name
        self._next = 1
        self._lock = threading.Lock()
        self._nodes: tuple[RayNode, ...] = ()
        self._gpus: tuple[GpuReading, ...] = ()
        self._probes: dict[str, Any] = {}  # node id -> GpuProbe actor handle
        self._departed: set[str] = set()  # node ids known gone; Ray never reuses one
        self._temp_dir: str | None = None
        self._load_names()

    # -- connection ---------------------------------------------------------------------

    def connect(self) -> None:
        """Connects this process to the cluster (or starts a private one for `local`)
        and reads its nodes. Raises ConnectionError when there is no cluster there."""
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        options: dict[str, Any] = {
            "namespace": "tandem",
            "logging_level": logging.WARNING,
            # Actors report through Tandem's own event stream; their stdout and stderr
            # stay in Ray's session logs instead of interleaving with the server's log.
            "log_to_driver": False,
            "include_dashboard": False,
        }
        if self.address == "local":
            # Unix socket paths must stay under ~107 characters: a short dir of our own.
            self._temp_dir = tempfile.mkdtemp(prefix="tandem-ray-", dir="/tmp")
            options["_temp_dir"] = self._temp_dir
        else:
            self._check_reachable()
        try:
            ray.init(address=self.address, **options)
        except Exception as exc:  # Ray raises plain Exceptions and RuntimeErrors here
            raise ConnectionError(
                f"cannot connect to the Ray cluster at {self.address!r}: {first_line(exc)}"
            ) from None
        self.refresh()
        names = ", ".join(node.describe() for node in self.nodes())
        log.info("connected to Ray at %s: %s", self.address, names or "no nodes")

    def _check_reachable(self) -> None:
        """Raises ConnectionError at once when a HOST:PORT address accepts no connection:
        Ray would retry for minutes before saying so in many lines."""
        host, colon, port = self.address.rpartition(":")
        if not colon or not port.isdigit() or "://" in self.address:
            return  # `auto`, or a form Ray checks itself
        try:
            socket.create_connection((host.strip("[]"), int(port)), _REACH_TIMEOUT_S).close()
        except OSError as exc:
            reason = exc.strerror or first_line(exc)
            raise ConnectionError(
                f"cannot reach the Ray cluster at {self.address}: {reason}"
            ) from None

    def close(self) -> None:
        """Disconnects (stopping a private `local` Ray); idempotent."""
        for probe in self._probes.values():
            try:
                ray.kill(probe)
            except Exception:  # already gone with its node
                log.debug("could not kill a GPU probe", exc_info=True)
        self._probes.clear()
        if ray.is_initialized():
            ray.shutdown()
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    # -- reading ------------------------------------------------------------------------

    def nodes(self) -> tuple[RayNode, ...]:
        """The live nodes at the last refresh, by name (node-1 first)."""
        with self._lock:
            return self._nodes

    def node(self, name: str) -> RayNode | None:
        """The live node called `name`, as of the last refresh."""
        return next((node for node in self.nodes() if node.name == name), None)

    def gpus(self) -> tuple[GpuReading, ...]:
        """Every live node's GPUs with their memory at the last refresh."""
        with self._lock:
            return self._gpus

    def refresh(self) -> tuple[RayNode, ...]:
        """Reads the cluster's live nodes (naming new ones) and their GPU memory."""
        with self._lock:
            departed = set(self._departed)
        raw = [e for e in _ray_nodes() if e.get("Alive") and e["NodeID"] not in departed]
        # The head first, then Ray's order: names follow the order nodes are first seen.
        raw.sort(key=lambda entry: _HEAD_RESOURCE not in entry.get("Resources", {}))
        fresh = [entry["NodeID"] for entry in raw if entry["NodeID"] not in self._names]
        for node_id in fresh:
            self._names[node_id] = f"node-{self._next}"
            self._next += 1
        if fresh:
            self._save_names()
        nodes = tuple(
            sorted(
                (self._node(entry) for entry in raw),
                key=lambda node: int(node.name.rpartition("-")[2]),
            )
        )
        gpus = self._read_gpus(nodes)
        with self._lock:
            # A node that left while this refresh read the table stays gone.
            nodes = tuple(node for node in nodes if node.node_id not in self._departed)
            names = {node.name for node in nodes}
            self._nodes = nodes
            self._gpus = tuple(gpu for gpu in gpus if gpu.node in names)
        return nodes

    def forget(self, name: str) -> None:
        """The node `name` left: it is listed no more, even by a refresh that read Ray's
        node table before it left (Ray may list a dying node alive for a while)."""
        with self._lock:
            self._departed.update(i for i, n in list(self._names.items()) if n == name)
            self._nodes = tuple(node for node in self._nodes if node.name != name)
            self._gpus = tuple(gpu for gpu in self._gpus if gpu.node != name)

    def alive(self, node_id: str) -> bool:
        """Whether Ray still counts the node as alive (asks the cluster now)."""
        return any(e["NodeID"] == node_id and e.get("Alive") for e in _ray_nodes())

    # -- internals ------------------------------------------------------------------------

    def _node(self, entry: dict[str, Any]) -> RayNode:
        resources = entry.get("Resources", {})
        return RayNode(
            name=self._names[entry["NodeID"]],
            node_id=entry["NodeID"],
            address=str(entry.get("NodeManagerAddress", "")),
            hostname=str(entry.get("NodeManagerHostname", "")),
            cpus=float(resources.get("CPU", 0.0)),
            gpus=int(resources.get("GPU", 0)),
            head=_HEAD_RESOURCE in resources,
        )

    def _read_gpus(self, nodes: Sequence[RayNode]) -> tuple[GpuReading, ...]:
        with_gpus = {node.node_id: node for node in nodes if node.gpus}
        for node_id in set(self._probes) - set(with_gpus):
            self._probes.pop(node_id)  # its node left; the actor went with it
        if not with_gpus:
            return ()
        refs = {}
        for node_id in with_gpus:
            probe: Any = self._probes.get(node_id)
            if probe is None:
                probe = self._probes[node_id] = (
                    ray.remote(GpuProbe)
                    .options(
                        num_cpus=0,
                        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
                    )
                    .remote()
                )
            refs[node_id] = probe.read.remote()
        ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=_PROBE_TIMEOUT_S)
        previous = {(g.node, g.index): g for g in self.gpus()}
        readings: list[GpuReading] = []
        for node_id, node in with_gpus.items():
            measured: dict[int, GpuReading] = {}
            if refs[node_id] in ready:
                try:
                    for index, name, total, used, free in ray.get(refs[node_id]):
                        measured[index] = GpuReading(node.name, index, name, total, used, free)
                except Exception as exc:
                    log.warning("cannot read the GPUs of %s: %s", node.describe(), exc)
                    self._probes.pop(node_id, None)  # start a new probe next time
            for index in range(node.gpus):
                unread = GpuReading(node.name, index, "unreadable (no NVML)", 0, 0, 0)
                readings.append(measured.get(index) or previous.get((node.name, index)) or unread)
        return tuple(readings)

    def _load_names(self) -> None:
        if self._names_file is None or not self._names_file.exists():
            return
        try:
            saved = json.loads(self._names_file.read_text())
            self._names = {str(k): str(v) for k, v in saved["nodes"].items()}
            self._next = int(saved["next"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable node names in %s: %s", self._names_file, exc)

    def _save_names(self) -> None:
        if self._names_file is None:
            return
        data = json.dumps({"next": self._next, "nodes": self._names}, indent=1)
        try:
            temporary = self._names_file.with_suffix(".tmp")
            temporary.write_text(data)
            temporary.replace(self._names_file)
        except OSError as exc:
            log.warning("cannot save node names to %s: %s", self._names_file, exc)


def _ray_nodes() -> list[dict[str, Any]]:
    """Ray's node table: every node it has known, alive or dead."""
    nodes: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]
    return nodes
