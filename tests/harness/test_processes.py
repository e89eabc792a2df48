"""The one retry a Ray start gets when Ray's fixed 30 s for a raylet passes."""

from __future__ import annotations

import pytest

from tests.harness.processes import twice_if_ray_times_out


def test_a_start_that_timed_out_is_cleaned_up_and_tried_once_more() -> None:
    calls: list[str] = []

    def start(attempt: int) -> str:
        calls.append(f"start {attempt}")
        if attempt == 1:
            raise Exception("The current node timed out during startup.")
        return "cluster"

    assert twice_if_ray_times_out(start, lambda: calls.append("clean up")) == "cluster"
    assert calls == ["start 1", "clean up", "start 2"]


def test_any_other_failure_and_a_second_timeout_are_raised() -> None:
    def refused(attempt: int) -> None:
        raise ValueError("object_store_memory is too small")

    cleaned: list[int] = []
    with pytest.raises(ValueError, match="too small"):
        twice_if_ray_times_out(refused, lambda: cleaned.append(1))
    assert cleaned == []

    def always_slow(attempt: int) -> None:
        raise Exception(f"Timed out waiting for file gcs_server_port (try {attempt})")

    with pytest.raises(Exception, match=r"try 2"):
        twice_if_ray_times_out(always_slow, lambda: cleaned.append(1))
    assert cleaned == [1]
