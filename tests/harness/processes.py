"""Ray starts that time out on a busy machine: Ray gives a new raylet (and the GCS its
port file) a fixed 30 s, which a 2-core machine running other work can pass. One more
try after a clean-up, and the processes to clean up, found by what they are; for the
tests' Ray cluster and the Ray Serve benchmark alike."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

__all__ = ["kill_processes_using", "raylets", "twice_if_ray_times_out"]

T = TypeVar("T")


def twice_if_ray_times_out(start: Callable[[int], T], clean_up: Callable[[], None]) -> T:
    """`start(1)`; if Ray says it timed out ("... timed out during startup", "Timed out
    waiting for file .../gcs_server_port_..."), `clean_up()` and `start(2)`. Any other
    error, and a second timeout, is raised."""
    try:
        return start(1)
    except Exception as exc:
        if "timed out" not in str(exc).lower():
            raise
    clean_up()
    return start(2)


def raylets(folder: str) -> set[int]:
    """The pids of the raylets whose command line names `folder` (their cluster's temp
    dir): this cluster's, not another one's on the same machine."""
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if (entry / "comm").read_text().strip() != "raylet":
                continue
            if folder.encode() in (entry / "cmdline").read_bytes():
                found.add(int(entry.name))
    return found


def kill_processes_using(folder: str) -> None:
    """SIGKILLs the processes whose command line names `folder` (a failed Ray start's GCS
    and raylet name its temp dir), so they do not linger beside the next try."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
            if folder.encode() in command:
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue
