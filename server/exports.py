"""Model exports, each run in a process of its own: the server never imports torch.

`Exporter.export` starts `python -m engines.export` for one model file: at most
`max_running` at a time (later calls wait their turn, in order), with `threads` CPU
threads each, so an export does not starve the jobs running beside it, and within
`timeout_s`. The process answers with one JSON line; what the exporters print goes to
its stderr, which reaches the server's log only at debug level. A call cancelled by its
client (or a deadline) kills the process. Where an export is written is `export_path`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

import engines
from server.errors import ServiceError, failed_precondition, invalid_argument

log = logging.getLogger(__name__)

# File name endings by format: names that say what a file is.
SUFFIXES: Mapping[str, str] = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
# The folder, under the data dir, for exports of files given by `model_path`: the model
# roots they come from may be read-only.
EXPORTS_FOLDER = "exports"
# A file name's stem is cut to this, leaving room for the digest and the ending.
_MAX_STEM = 100
# What `engines.export` leaves behind when it is killed mid-write.
_TEMPORARY = ".{name}.*.tmp"

DEFAULT_MAX_RUNNING = 2
DEFAULT_THREADS = 2
# Export and check of the largest zoo models on two threads took minutes, not ten.
DEFAULT_TIMEOUT_S = 600.0


def export_path(fmt: str, model_path: str, task_dir: Path | None, *, data_dir: Path) -> Path:
    """Where the `fmt` export of a model goes: beside a training task's model
    (`<task_dir>/model.onnx`), or, for a model file given by path, under
    `<data_dir>/exports/`, named after the file and a digest of its path (so two files
    with one name do not share an export)."""
    suffix = SUFFIXES[fmt]
    if task_dir is not None:
        return task_dir / f"model{suffix}"
    digest = hashlib.sha256(model_path.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    stem = Path(model_path).stem[:_MAX_STEM]
    return data_dir / EXPORTS_FOLDER / f"{stem}-{digest}{suffix}"


@dataclass(frozen=True)
class Exported:
    """A written and checked export, as `engines.export` reports it."""

    path: str
    format: str
    size_bytes: int
    max_abs_diff: float
    opset: int
    seconds: float


class Exporter:
    """Runs exports in child processes, a few at a time."""

    def __init__(
        self,
        *,
        max_running: int = DEFAULT_MAX_RUNNING,
        threads: int = DEFAULT_THREADS,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self._turns = asyncio.Semaphore(max_running)
        self._threads = threads
        self._timeout_s = timeout_s
        # Exports of one file take turns, so a killed one's leftovers are known to be its;
        # each lock is kept while calls hold or wait for it.
        self._writing: dict[Path, tuple[asyncio.Lock, int]] = {}

    async def export(self, model_path: str, fmt: str, output: Path) -> Exported:
        """Exports `model_path` to `output` in `fmt` ("onnx", "torchscript").

        Raises ServiceError: INVALID_ARGUMENT for a file that is not a usable model,
        FAILED_PRECONDITION for a model that cannot be exported or fails the check,
        DEADLINE_EXCEEDED past `timeout_s`, INTERNAL if the process dies unanswered."""
        lock, users = self._writing.get(output, (asyncio.Lock(), 0))
        self._writing[output] = (lock, users + 1)
        try:
            async with lock, self._turns:
                return await self._run(model_path, fmt, output)
        finally:
            lock, users = self._writing[output]
            if users == 1:
                del self._writing[output]
            else:
                self._writing[output] = (lock, users - 1)

    async def _run(self, model_path: str, fmt: str, output: Path) -> Exported:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "engines.export",
            "--model",
            model_path,
            "--format",
            fmt,
            "--output",
            str(output),
            "--threads",
            str(self._threads),
            "--parent-pid",
            str(os.getpid()),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self._environment(),
        )
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), self._timeout_s)
        except TimeoutError:
            raise ServiceError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"the {fmt} export of {model_path} did not finish within {self._timeout_s:g} s",
            ) from None
        finally:
            if process.returncode is None:  # timed out, or the call was cancelled
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
                _remove_leftovers(output)
        chatter = stderr.decode(errors="replace").strip()
        if chatter:
            log.debug("export of %s to %s said:\n%s", model_path, fmt, chatter)
        return _answer(stdout, chatter, process.returncode, model_path)

    def _environment(self) -> dict[str, str]:
        threads = str(self._threads)
        # The same engines as this server's, wherever it was started from; OpenMP reads
        # its thread count as torch loads, before any code of ours runs there.
        here = str(Path(engines.__file__).resolve().parents[1])
        paths = [here, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        return {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(paths),
            "OMP_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
        }


def _remove_leftovers(output: Path) -> None:
    for leftover in output.parent.glob(_TEMPORARY.format(name=output.name)):
        with contextlib.suppress(OSError):
            leftover.unlink()


def _answer(stdout: bytes, chatter: str, returncode: int | None, model_path: str) -> Exported:
    lines = stdout.decode(errors="replace").strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        answer = None
    if not isinstance(answer, dict):
        last = chatter.splitlines()[-1] if chatter else "no message"
        raise ServiceError(
            grpc.StatusCode.INTERNAL,
            f"the export process ended without an answer (exit status {returncode}): {last}",
        )
    if not answer.get("ok"):
        error = str(answer.get("error", "the export failed"))
        if answer.get("kind") == "model":
            raise invalid_argument(f"model file {model_path} is not a usable Tandem model: {error}")
        raise failed_precondition(error)
    exported = Exported(
        path=str(answer["path"]),
        format=str(answer["format"]),
        size_bytes=int(answer["size_bytes"]),
        max_abs_diff=float(answer["max_abs_diff"]),
        opset=int(answer["opset"]),
        seconds=float(answer["seconds"]),
    )
    log.info(
        "exported %s to %s (%s, %d bytes, max |diff| %.1e, %.1f s)",
        model_path,
        exported.path,
        exported.format,
        exported.size_bytes,
        exported.max_abs_diff,
        exported.seconds,
    )
    return exported
