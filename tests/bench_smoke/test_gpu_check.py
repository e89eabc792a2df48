"""`python -m bench.gpu_check` (issue 19) says in one line that there is no GPU here and
exits 0; its registry of checks names every check function, each figure once, and goals
only on figures a check reports.

The checks themselves need a GPU and run under `make gpu-check`, not in tests.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from bench import gpu_check

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(gpu_check.no_gpu_reason() is None, reason="this machine has a GPU")
def test_without_a_gpu_it_prints_one_line_and_exits_0() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.gpu_check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout
    assert lines[0].startswith("gpu-check: no NVIDIA GPU on this machine ("), lines[0]
    assert not (ROOT / "bench" / "results" / "gpu.json.partial").exists()


def test_every_check_function_is_in_the_registry() -> None:
    functions = {
        function
        for name, function in inspect.getmembers(gpu_check, inspect.isfunction)
        if name.startswith("check_")
    }

    assert {check.run for check in gpu_check.CHECKS} == functions
    assert len({check.name for check in gpu_check.CHECKS}) == len(gpu_check.CHECKS)
    assert all(check.budget_s > 0 for check in gpu_check.CHECKS)
    assert sum(check.budget_s for check in gpu_check.CHECKS) <= gpu_check.TOTAL_BUDGET_S


def test_figure_names_are_unique_and_every_goal_names_one() -> None:
    names = [name for check in gpu_check.CHECKS for name in check.figures]

    assert len(names) == len(set(names))
    assert {goal.figure for goal in gpu_check.goals()} <= set(names)


def test_a_failing_check_gives_nan_figures_and_its_reason() -> None:
    def broken(inputs: gpu_check.Inputs, budget: gpu_check.Budget) -> dict[str, float]:
        raise RuntimeError("CUDA error: out of memory")

    check = gpu_check.Check("broken", broken, 1, ("broken_a", "broken_b"))
    figures, reason = gpu_check.run_check(check, inputs=None)  # type: ignore[arg-type]

    assert set(figures) == {"broken_a", "broken_b"}
    assert all(value != value for value in figures.values())  # NaN
    assert reason == "RuntimeError: CUDA error: out of memory"


def test_the_json_keeps_a_failed_figure_as_null_with_its_reason(tmp_path: Path) -> None:
    path = tmp_path / "gpu.json"

    gpu_check.write(path, {"a_ms": 1.5, "b_ms": float("nan")}, {"b": "RuntimeError: x"})

    text = path.read_text(encoding="utf-8")
    assert '"b_ms": null' in text and '"a_ms": 1.5' in text and "RuntimeError: x" in text
