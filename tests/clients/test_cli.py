"""The `tandem` CLI end to end, as a person or a script runs it, against a live server."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from scheduler import StaticInventory
from tandem.cli import gpu_memory_table
from tandem.v1 import resource_service_pb2, resources_pb2
from tests.conftest import ServerThread

TANDEM = str(Path(sys.executable).parent / "tandem")


def run(server: ServerThread, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TANDEM, "--address", f"127.0.0.1:{server.port}", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_train_follow_to_success_and_json_everywhere(shared_server: ServerThread) -> None:
    done = run(
        shared_server,
        "train", "mobilenet_v3_small", "synthetic",
        "--image-size", "32", "--epochs", "2", "--device", "cpu", "--follow",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "SUCCEEDED" in done.stdout or "succeeded" in done.stdout
    task_id = done.stdout.split()[0]

    shown = json.loads(run(shared_server, "--json", "task", task_id).stdout)
    assert shown["state"] == "TASK_STATE_SUCCEEDED"
    listed = json.loads(run(shared_server, "--json", "tasks", "--state", "succeeded").stdout)
    assert task_id in [t["task_id"] for t in listed]
    lines = run(shared_server, "--json", "logs", task_id).stdout.splitlines()
    events = [json.loads(line) for line in lines]
    assert [int(e["seq"]) for e in events] == list(range(1, len(events) + 1))
    resources = json.loads(run(shared_server, "--json", "resources").stdout)
    assert "cpu" in resources["device_usage"]
    limits = json.loads(
        run(shared_server, "--json", "limits", "set", "cpu", "inference", "4").stdout
    )
    assert limits["max_concurrent"]["cpu"]["inference"] == 4
    table = run(shared_server, "tasks").stdout
    assert table.splitlines()[0].split()[:3] == ["TASK", "KIND", "STATE"]


def test_a_failing_task_exits_non_zero(shared_server: ServerThread) -> None:
    failed = run(
        shared_server,
        "train", "alexnet", "synthetic", "--image-size", "16", "--device", "cpu", "--follow",
    )  # fmt: skip
    assert failed.returncode == 1
    assert "FAILED" in failed.stdout or "alexnet" in failed.stdout


def test_errors_are_one_line_not_a_traceback(shared_server: ServerThread) -> None:
    missing = run(shared_server, "task", "nope")
    assert missing.returncode == 1
    assert missing.stderr.strip().startswith("error:") and "NOT_FOUND" in missing.stderr
    assert "Traceback" not in missing.stderr
    bad = run(shared_server, "train", "resnet19", "synthetic")
    assert bad.returncode == 1 and "resnet18" in bad.stderr


def test_train_can_opt_out_of_preemption(shared_server: ServerThread) -> None:
    opted_out = run(
        shared_server,
        "--json", "train", "mobilenet_v3_small", "synthetic",
        "--image-size", "32", "--device", "cpu", "--not-preemptible",
    )  # fmt: skip
    assert opted_out.returncode == 0, opted_out.stderr
    task = json.loads(opted_out.stdout)
    # Printed even when false (the CLI's JSON keeps zero values); a default submit says true.
    assert task["training"]["preemptible"] is False
    default = run(
        shared_server,
        "--json", "train", "mobilenet_v3_small", "synthetic",
        "--image-size", "32", "--device", "cpu",
    )  # fmt: skip
    assert json.loads(default.stdout)["training"]["preemptible"] is True
    for submitted in (task, json.loads(default.stdout)):
        run(shared_server, "cancel", submitted["task_id"])


def test_resources_shows_each_gpus_memory_and_what_admission_holds_on_it(
    fresh_server: Callable[..., ServerThread],
) -> None:
    server = fresh_server(StaticInventory.uniform(2, total_bytes=16 * 2**30))
    table = run(server, "resources").stdout
    gpu_table = table.split("\n\n")[1].splitlines()
    assert gpu_table[0].split() == [
        "GPU", "DEVICE", "TOTAL-GB", "USED-GB", "FREE-GB", "ADMITTED-GB",
    ]  # fmt: skip
    assert [row.split() for row in gpu_table[1:]] == [
        ["GPU_0", "cuda:0", "16.0", "0.0", "16.0", "0.0"],
        ["GPU_1", "cuda:1", "16.0", "0.0", "16.0", "0.0"],
    ]
    shown = json.loads(run(server, "--json", "resources").stdout)
    assert shown["gpu_memory_info"]["GPU_0"]["estimated_gb"] == 0.0


def test_the_gpu_table_puts_each_figure_under_its_own_heading() -> None:
    info = resources_pb2.GpuMemoryInfo
    reply = resource_service_pb2.GetResourcesResponse(
        gpu_memory_info={
            "GPU_1": info(device="cuda:1", total_gb=80.0, allocated_gb=2.5, free_gb=77.5),
            "GPU_0": info(
                device="cuda:0", total_gb=24.0, allocated_gb=8.5, free_gb=15.5, estimated_gb=11.0
            ),
        }
    )
    rows = [line.split() for line in gpu_memory_table(reply).splitlines()]
    assert rows == [
        ["GPU", "DEVICE", "TOTAL-GB", "USED-GB", "FREE-GB", "ADMITTED-GB"],
        ["GPU_0", "cuda:0", "24.0", "8.5", "15.5", "11.0"],
        ["GPU_1", "cuda:1", "80.0", "2.5", "77.5", "0.0"],
    ]
