"""Processes on this machine found by what they are: for cleaning up after a Ray start
that timed out (Ray gives a new raylet a fixed 30 s to register, which a busy 2-core
machine can pass), in the tests' Ray cluster and in the Ray Serve benchmark alike."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

__all__ = ["kill_processes_using", "raylets"]


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
