"""A served model's forward lanes: a lone pass gets every thread of the model's share on
the wide lane; batches that wait together run side by side on one-thread narrow lanes;
the two never run at once, so the threads at work never exceed the share."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from concurrent.futures import Future

import pytest
import torch

from engines.forward_lanes import ForwardLanes, LanesClosed

WAIT_S = 60


class Gate:
    """Passes that report where they run and hold until released."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: list[tuple[str, int]] = []  # (lane, threads) of the passes running now
        self.seen: list[tuple[str, int]] = []  # every pass, in the order they started
        self.most_threads = 0
        self.started = threading.Semaphore(0)
        self.release = threading.Event()

    def work(self) -> Callable[[], tuple[str, int]]:
        def run() -> tuple[str, int]:
            me = (threading.current_thread().name.rsplit("_", 1)[0], torch.get_num_threads())
            with self.lock:
                self.running.append(me)
                self.seen.append(me)
                self.most_threads = max(self.most_threads, sum(t for _, t in self.running))
            self.started.release()
            assert self.release.wait(WAIT_S)
            with self.lock:
                self.running.remove(me)
            return me

        return run

    def wait_started(self, count: int) -> None:
        for _ in range(count):
            assert self.started.acquire(timeout=WAIT_S), "a pass never started"


def test_a_lone_pass_runs_on_the_wide_lane_with_every_thread() -> None:
    lanes = ForwardLanes(threads=3, max_narrow=4)
    try:
        gate = Gate()
        gate.release.set()
        assert lanes.submit(gate.work()).result(WAIT_S) == ("tandem-forward-wide", 3)
        # The model's load runs there too, at the same count.
        assert lanes.call(torch.get_num_threads) == 3
        assert lanes.call(lambda: threading.current_thread().name).startswith("tandem-forward-wide")
    finally:
        lanes.close()


def test_batches_waiting_together_run_on_narrow_lanes_one_thread_each() -> None:
    lanes = ForwardLanes(threads=2, max_narrow=4)
    gate = Gate()
    try:
        first = lanes.submit(gate.work())  # finds the model idle: the wide lane
        gate.wait_started(1)
        queued = [lanes.submit(gate.work()) for _ in range(4)]  # wait behind it
        with gate.lock:
            assert gate.running == [("tandem-forward-wide", 2)]  # none beside the wide pass
        gate.release.set()
        results: list[Future[tuple[str, int]]] = [first, *queued]
        answers = [future.result(WAIT_S) for future in results]
    finally:
        lanes.close()
    assert answers[0] == ("tandem-forward-wide", 2)
    assert answers[1:] == [("tandem-forward-narrow", 1)] * 4
    assert gate.most_threads == 2  # the share, never more
    assert lanes.most_at_once == 2  # two narrow lanes: one per thread of the share


def test_narrow_lanes_run_side_by_side_up_to_the_share() -> None:
    lanes = ForwardLanes(threads=2, max_narrow=4)
    gate = Gate()
    blocker = threading.Event()
    try:
        # Hold the wide lane, queue three batches, then let the wide pass end: the three
        # waiting batches (at least the share's two threads) take narrow lanes.
        lanes.submit(lambda: blocker.wait(WAIT_S))
        futures = [lanes.submit(gate.work()) for _ in range(3)]
        blocker.set()
        gate.wait_started(2)
        with gate.lock:
            assert sorted(gate.running) == [("tandem-forward-narrow", 1)] * 2
        gate.release.set()
        assert [f.result(WAIT_S) for f in futures] == [("tandem-forward-narrow", 1)] * 3
    finally:
        lanes.close()
    assert gate.most_threads == 2


def test_a_single_thread_share_runs_every_pass_on_the_wide_lane() -> None:
    lanes = ForwardLanes(threads=1, max_narrow=4)
    gate = Gate()
    gate.release.set()
    try:
        futures = [lanes.submit(gate.work()) for _ in range(5)]
        assert {f.result(WAIT_S) for f in futures} == {("tandem-forward-wide", 1)}
    finally:
        lanes.close()
    assert lanes.most_at_once == 1


def test_a_new_share_applies_from_the_next_pass() -> None:
    lanes = ForwardLanes(threads=2, max_narrow=4)
    try:
        assert lanes.submit(torch.get_num_threads).result(WAIT_S) == 2
        lanes.set_threads(1)
        assert lanes.submit(torch.get_num_threads).result(WAIT_S) == 1
        lanes.set_threads(3)
        assert lanes.submit(torch.get_num_threads).result(WAIT_S) == 3
    finally:
        lanes.close()


def test_close_answers_every_queued_pass_then_refuses_new_ones() -> None:
    lanes = ForwardLanes(threads=2, max_narrow=4)
    blocker = threading.Event()
    held = lanes.submit(lambda: blocker.wait(WAIT_S))
    queued = [lanes.submit(functools.partial(int, i)) for i in range(5)]
    closer = threading.Thread(target=lanes.close)
    closer.start()
    blocker.set()
    closer.join(WAIT_S)
    assert not closer.is_alive()
    assert held.result(0) is True
    assert [f.result(0) for f in queued] == list(range(5))
    with pytest.raises(LanesClosed):
        lanes.submit(lambda: None)


def test_a_failing_pass_fails_its_own_future_only() -> None:
    lanes = ForwardLanes(threads=2, max_narrow=4)
    try:

        def broken() -> None:
            raise ValueError("no memory")

        failed = lanes.submit(broken)
        with pytest.raises(ValueError, match="no memory"):
            failed.result(WAIT_S)
        assert lanes.submit(lambda: 7).result(WAIT_S) == 7
    finally:
        lanes.close()


def test_parts_submitted_together_take_narrow_lanes_even_on_an_idle_model() -> None:
    lanes = ForwardLanes(threads=3, max_narrow=4)
    gate = Gate()
    try:
        # Two parts on a three-thread model: fewer than its threads, yet both narrow.
        parts = lanes.submit_together([gate.work(), gate.work()])
        gate.wait_started(2)
        with gate.lock:
            assert sorted(gate.running) == [("tandem-forward-narrow", 1)] * 2
        # A batch behind them takes the third narrow lane: no wide pass beside narrow ones.
        later = lanes.submit(gate.work())
        gate.wait_started(1)
        gate.release.set()
        assert [f.result(WAIT_S) for f in parts] == [("tandem-forward-narrow", 1)] * 2
        assert later.result(WAIT_S) == ("tandem-forward-narrow", 1)
    finally:
        lanes.close()
    assert gate.most_threads == 3  # the share exactly: three one-thread passes at once
    assert lanes.narrow_lanes == 3


def test_parts_wait_for_a_wide_pass_then_run_beside_each_other() -> None:
    lanes = ForwardLanes(threads=2, max_narrow=4)
    gate = Gate()
    blocker = threading.Event()
    try:
        lanes.submit(lambda: blocker.wait(WAIT_S))  # the wide lane, both threads
        parts = lanes.submit_together([gate.work() for _ in range(3)])
        assert gate.running == []  # nothing beside the wide pass
        blocker.set()
        gate.wait_started(2)
        with gate.lock:
            assert sorted(gate.running) == [("tandem-forward-narrow", 1)] * 2
        gate.release.set()
        assert [f.result(WAIT_S) for f in parts] == [("tandem-forward-narrow", 1)] * 3
    finally:
        lanes.close()
    assert gate.most_threads == 2


def test_parts_are_refused_once_the_lanes_close() -> None:
    lanes = ForwardLanes(threads=2, max_narrow=4)
    lanes.close()
    with pytest.raises(LanesClosed):
        lanes.submit_together([lambda: 1, lambda: 2])
