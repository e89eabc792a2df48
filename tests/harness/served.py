"""`tandem serve` as a child process, the way an operator runs it, for tests and
benchmarks that need the real command (signals, exit status, start-up lines).

The ports are chosen by the OS (port 0); the addresses are read from the two lines
`tandem serve` prints once it is serving. `tandem serve` itself does not use this.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

__all__ = ["ServedProcess"]

TANDEM = str(Path(sys.executable).parent / "tandem")
_GRPC_LINE = re.compile(r"serving gRPC on (\S+)")
_REST_LINE = re.compile(r"serving REST on (\S+)")


class ServedProcess:
    """Starts `tandem serve --data-dir DATA_DIR [args]` and waits until it serves.

    The environment is the caller's with no dataset roots and no token unless `env`
    says otherwise. `new_session`: a process group of its own, as a service manager
    would start it (a signal to the caller's group does not reach it)."""

    def __init__(
        self,
        data_dir: Path,
        *args: str,
        env: Mapping[str, str] | None = None,
        new_session: bool = False,
    ) -> None:
        self.process = subprocess.Popen(
            [
                *(TANDEM, "serve", "--grpc-port", "0", "--http-port", "0"),
                *("--data-dir", str(data_dir), *args),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=new_session,
            env={**os.environ, "TANDEM_DATASET_ROOTS": "", "TANDEM_AUTH_TOKEN": "", **(env or {})},
        )
        assert self.process.stdout is not None
        # Blocks until the server says it serves (or exits: the lines are then empty).
        grpc_line, rest_line = self.process.stdout.readline(), self.process.stdout.readline()
        grpc_match, rest_match = _GRPC_LINE.search(grpc_line), _REST_LINE.search(rest_line)
        if not (grpc_match and rest_match):
            self.kill()
            raise RuntimeError(f"tandem serve did not start: {grpc_line!r} {rest_line!r}")
        self.grpc_address = grpc_match.group(1)
        self.rest_url = rest_match.group(1)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def grpc_port(self) -> int:
        return int(self.grpc_address.rpartition(":")[2])

    def stop(self, timeout_s: float = 60.0) -> tuple[int, str]:
        """SIGTERM, then SIGKILL if it has not exited within `timeout_s`; returns the exit
        status and what it printed after its start-up lines."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            remaining, _ = self.process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            remaining = ""
        return self.process.returncode, remaining

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def __enter__(self) -> ServedProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def children(pid: int) -> list[int]:
    """Process ids whose parent is `pid` (a served server's workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: split after it.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found
