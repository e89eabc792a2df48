"""The parent's handle on one worker process: start, send, watch, close.

Close follows torchelastic's rule: ask politely (a Shutdown message), wait until a
monotonic deadline, then SIGTERM, then SIGKILL. A worker whose job must stop now is
killed outright; the caller reports the job's end.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import multiprocessing
import os
import signal
import socket
import sys
from collections.abc import Iterator, Mapping
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext, SpawnProcess

from engines.protocol import Shutdown, ToWorker
from engines.worker import worker_main

_ids = itertools.count(1)
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _worker_entry(conn: Connection, parent_pid: int) -> None:
    """The child's first steps: bind its life to the server's, then run the worker."""
    die_with_parent(parent_pid)
    worker_main(conn)


@contextlib.contextmanager
def _environment(variables: Mapping[str, str]) -> Iterator[None]:
    """`variables` set in this process while a child is spawned, then as they were.

    A spawned child starts with its parent's environment, and that is the only way to
    set what a library reads when it loads: the child may import torch (and OpenMP)
    while it unpickles its `__main__`, before any code of ours runs there."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def die_with_parent(parent_pid: int) -> None:
    """Asks Linux to SIGKILL this process when the server dies, even by SIGKILL.

    Otherwise a worker of a killed server trains on until its next event, and may
    write checkpoints into a task that the restarted server has already resumed
    elsewhere. Elsewhere than Linux the worker still exits at its next event (EOF)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return
    if os.getppid() != parent_pid:  # the server died before the request took hold
        os._exit(1)


# Every worker's CUDA numbers GPUs by PCI bus, as the server's NVML inventory does
# (scheduler/inventory.py), so `cuda:N` is the GPU whose memory admission read. CUDA's
# default ("fastest first") follows no order NVML can be matched to.
WORKER_CUDA_ENV: Mapping[str, str] = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}


class WorkerProcess:
    """One spawned worker, dedicated to a device."""

    def __init__(
        self,
        device: str,
        ctx: SpawnContext | None = None,
        environment: Mapping[str, str] | None = None,
    ) -> None:
        self.device = device
        self._environment = {**(environment or {}), **WORKER_CUDA_ENV}
        self.worker_id = next(_ids)
        self._ctx = ctx or multiprocessing.get_context("spawn")
        self.conn: Connection | None = None
        self.process: SpawnProcess | None = None
        self.ready = False
        # The task the worker is running (or about to run); None while idle.
        self.task_id: str | None = None

    @property
    def name(self) -> str:
        return f"tandem-worker-{self.device}-{self.worker_id}"

    def start(self) -> None:
        parent, child = self._ctx.Pipe(duplex=True)
        for end in (parent, child):
            _widen_buffers(end)
        process = self._ctx.Process(
            target=_worker_entry, args=(child, os.getpid()), name=self.name, daemon=True
        )
        with _environment(self._environment):
            process.start()
        # Drop the parent's copy of the child's end so the child's death reads as EOF.
        child.close()
        self.conn, self.process = parent, process

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def sentinel(self) -> int:
        assert self.process is not None
        return self.process.sentinel

    def send(self, message: ToWorker) -> bool:
        """Sends a message; False if the worker is already gone."""
        assert self.conn is not None
        try:
            self.conn.send(message)
        except (BrokenPipeError, EOFError, OSError):
            return False
        return True

    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    def kill(self) -> None:
        """SIGKILL now; the exit shows up on the sentinel."""
        if self.process is not None and self.process.is_alive():
            self.process.kill()

    def exit_description(self) -> str:
        """How the process ended, in words ("was killed by SIGKILL", "exited with code 1")."""
        assert self.process is not None
        self.process.join(timeout=1.0)
        code = self.process.exitcode
        if code is None:
            return "is still running"
        if code < 0:
            try:
                return f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"was killed by signal {-code}"
        return f"exited with code {code}"

    async def close(self, grace_s: float = 5.0) -> None:
        """Shutdown message, then SIGTERM, then SIGKILL, each after a deadline."""
        if self.process is None:
            return
        self.send(Shutdown())
        for step in (None, signal.SIGTERM, signal.SIGKILL):
            if step is signal.SIGTERM:
                self.process.terminate()
            elif step is signal.SIGKILL:
                self.process.kill()
            # join() in a thread: waits on the process itself, without polling.
            await asyncio.to_thread(self.process.join, grace_s)
            if not self.process.is_alive():
                break
        if self.conn is not None:
            self.conn.close()


# Room for a few encoded images in flight: with the default buffers, sending a 100 KB
# Predict image blocks the server's event loop until the worker has read it.
PIPE_BUFFER_BYTES = 4 * 1024 * 1024


def _widen_buffers(conn: Connection) -> None:
    # The duplicate descriptor shares the socket, so options set on it apply to `conn`.
    with socket.socket(fileno=os.dup(conn.fileno())) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, PIPE_BUFFER_BYTES)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, PIPE_BUFFER_BYTES)
