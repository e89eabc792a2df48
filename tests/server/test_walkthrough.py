"""`tandem serve` as a user runs it: a real process, the README's grpcurl walkthrough
command by command, and a clean exit on SIGTERM."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.served import ServedProcess

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
README_ADDRESS = "127.0.0.1:50051"


def walkthrough_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- walkthrough:", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.startswith("grpcurl ")]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServedProcess]:
    server = ServedProcess(tmp_path / "d")
    yield server
    server.kill()


def test_readme_walkthrough_then_sigterm(served: ServedProcess) -> None:
    port = served.grpc_port
    commands = walkthrough_commands()
    assert len(commands) >= 6
    task_id = ""
    outputs: dict[str, str] = {}
    for command in commands:
        argv = shlex.split(command.replace(README_ADDRESS, f"127.0.0.1:{port}"))
        argv = [a.replace("TASK_ID", task_id) for a in argv]
        argv[0] = str(BIN / "grpcurl")
        result = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"{command}\n{result.stderr}"
        method = argv[-1]
        outputs[method] = result.stdout
        if method.endswith("/Train"):
            task = json.loads(result.stdout)["task"]
            assert task["state"] == "TASK_STATE_QUEUED"
            task_id = task["task_id"]

    assert "tandem.v1.TrainingService" in outputs["list"]
    assert "grpc.health.v1.Health" in outputs["list"]
    assert "rpc Train" in outputs["tandem.v1.TrainingService"]
    assert '"SERVING"' in outputs["grpc.health.v1.Health/Check"]
    # The Logs stream ended by itself, with the terminal state as its last event.
    log_events = [
        json.loads(chunk) for chunk in _json_objects(outputs["tandem.v1.TaskService/Logs"])
    ]
    assert log_events[-1]["event"]["state"] == "TASK_STATE_SUCCEEDED"
    assert [int(e["event"]["seq"]) for e in log_events] == list(range(1, len(log_events) + 1))
    task = json.loads(outputs["tandem.v1.TaskService/GetTask"])["task"]
    assert task["state"] == "TASK_STATE_SUCCEEDED"
    assert Path(task["model_path"]).is_file()
    limits = json.loads(outputs["tandem.v1.ResourceService/UpdateLimits"])
    assert limits["max_concurrent"]["cpu"]["training"] == 1

    status, remaining = served.stop()  # SIGTERM
    assert status == 0
    assert "stopped" in remaining


def _json_objects(stream: str) -> Iterator[str]:
    """grpcurl prints one pretty JSON object per streamed message."""
    decoder = json.JSONDecoder()
    text = stream.strip()
    while text:
        _, end = decoder.raw_decode(text)
        yield text[:end]
        text = text[end:].lstrip()
