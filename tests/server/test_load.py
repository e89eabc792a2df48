"""Load at a size that fits `make test`: concurrent clients submit small tasks while
followers stream their logs; nothing is lost, logs are complete and in order, limits
hold, server memory stays bounded. The full size (1,000 tasks, 50 clients, 100
followers) runs in `make bench` (`python -m bench --only load`); see bench/load.py."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench import load
from bench.load import LoadShape, figures, run_load
from bench.registry import BENCHMARKS

SHAPE = LoadShape(tasks=40, clients=10, followers=20, cancel_every=7, deadline_s=600)


@pytest.mark.timeout(900)
def test_many_clients_and_followers_lose_nothing_and_respect_the_limits(tmp_path: Path) -> None:
    report = run_load(SHAPE, tmp_path)
    assert report.problems() == []
    assert len(report.task_ids) == SHAPE.tasks
    assert sum(report.states.values()) == SHAPE.tasks
    assert report.states.get("TASK_STATE_CANCELLED", 0) >= 1  # cancels were exercised
    # The limits were really under pressure, not trivially met by an idle server.
    assert report.swept_peak[("cpu", "training")] == report.limits[("cpu", "training")]
    # This run is also the load benchmark's smoke test: its figures come out sane.
    for name, value in figures(report).items():
        assert math.isfinite(value) and value >= 0, (name, value)
    assert load in BENCHMARKS  # and `make bench` runs it at full size
