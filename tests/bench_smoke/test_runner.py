"""`python -m bench`'s runner: a benchmark that fails costs only its own figures."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench.__main__ import main
from bench.report import Goal


def _benchmark(name: str, run: object, goals: tuple[Goal, ...] = ()) -> SimpleNamespace:
    # A benchmark is any module-like object with these three (bench.registry.Benchmark).
    return SimpleNamespace(__name__=f"bench.{name}", GOALS=goals, run=run)


def _broken(smoke: bool) -> dict[str, float]:
    raise RuntimeError("the peer did not start")


def test_a_failing_benchmark_is_reported_and_the_others_figures_are_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _benchmark(
        "before", lambda smoke: {"before_per_s": 2.0}, (Goal("before_per_s", minimum=1.0),)
    )
    broken = _benchmark("broken", _broken, (Goal("broken_ratio", minimum=1.0),))
    after = _benchmark("after", lambda smoke: {"after_ms": 3.0})
    output = tmp_path / "figures.json"

    status = main(["--output", str(output)], benchmarks=[before, broken, after])  # type: ignore[list-item]

    assert status == 1
    assert json.loads(output.read_text()) == {"before_per_s": 2.0, "after_ms": 3.0}
    printed = capsys.readouterr()
    assert "FAILED: RuntimeError: the peer did not start" in printed.out
    assert "FAILED (see above): broken" in printed.out
    assert "goals: 1 PASS, 0 MISS" in printed.out
    assert "the peer did not start" in printed.err  # the traceback


def test_a_run_where_every_benchmark_ran_exits_zero(tmp_path: Path) -> None:
    only = _benchmark("only", lambda smoke: {"only_per_s": 1.0})
    output = tmp_path / "figures.json"
    assert main(["--output", str(output)], benchmarks=[only]) == 0  # type: ignore[list-item]
    assert json.loads(output.read_text()) == {"only_per_s": 1.0}
