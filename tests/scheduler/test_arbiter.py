"""The arbiter, case by case: limits, order, no barging, run-time changes, explanations."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence

import pytest

from scheduler import (
    DEFAULT_CPU_LIMITS,
    DEFAULT_GPU_LIMITS,
    Admission,
    Arbiter,
    Kind,
    Limits,
    QueueFull,
    Request,
    check_priority,
)

TRAIN, INFER = Kind.TRAINING, Kind.INFERENCE


class ManualClock:
    """A monotonic clock that moves only when the test says so: aging without sleeping."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class MemoryBudget:
    """A small, real AdmissionGate: a job fits where its memory_bytes are still free."""

    def __init__(self, free: dict[str, int]) -> None:
        self.free = dict(free)
        self.reserved: dict[str, tuple[str, int]] = {}

    def fits(self, request: Request, device: str) -> bool:
        return request.memory_bytes <= self.free[device]

    def fits_after(self, request: Request, device: str, released: Sequence[Admission]) -> bool:
        gone = [self.reserved[a.job_id] for a in released if a.job_id in self.reserved]
        freed = sum(size for where, size in gone if where == device)
        return request.memory_bytes <= self.free[device] + freed

    def admitted(self, request: Request, device: str) -> None:
        self.free[device] -= request.memory_bytes
        self.reserved[request.job_id] = (device, request.memory_bytes)

    def released(self, admission: Admission) -> None:
        device, size = self.reserved.pop(admission.job_id)
        self.free[device] += size

    def rank(self, request: Request, devices: Sequence[str]) -> list[str]:
        return sorted(devices, key=lambda d: -self.free[d])

    def explain(self, request: Request, device: str) -> str:
        return f"needs {request.memory_bytes} on {device}, {self.free[device]} free"


def req(
    job_id: str,
    priority: int = 5,
    devices: tuple[str, ...] = ("cpu",),
    kind: Kind = TRAIN,
    *,
    memory: int = 0,
    submit_time: float | None = None,
) -> Request:
    return Request(job_id, kind, priority, devices, submit_time=submit_time, memory_bytes=memory)


def ids(admissions: list[Admission]) -> list[str]:
    return [admission.job_id for admission in admissions]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def cpu_arbiter(clock: ManualClock, training: int = 1, inference: int = 1, **kw: object) -> Arbiter:
    return Arbiter({"cpu": Limits(training, inference)}, clock=clock, **kw)  # type: ignore[arg-type]


# -- limits --------------------------------------------------------------------------------


def test_admits_up_to_the_limit_then_queues(clock: ManualClock) -> None:
    arbiter = Arbiter({"cpu": DEFAULT_CPU_LIMITS}, clock=clock)
    results = [arbiter.submit(req(f"t{i}")) for i in range(3)]
    assert results == [[Admission("t0", "cpu", TRAIN)], [Admission("t1", "cpu", TRAIN)], []]
    stats = arbiter.statistics()
    assert (
        stats.limit("cpu", TRAIN),
        stats.running("cpu", TRAIN),
        stats.waiting("cpu", TRAIN),
    ) == (2, 2, 1)
    assert (stats.total_running, stats.total_waiting) == (2, 1)


def test_training_and_inference_have_separate_pools(clock: ManualClock) -> None:
    arbiter = cpu_arbiter(clock, training=1, inference=2)
    assert ids(arbiter.submit(req("train", kind=TRAIN))) == ["train"]
    assert ids(arbiter.submit(req("infer1", kind=INFER))) == ["infer1"]
    assert ids(arbiter.submit(req("infer2", kind=INFER))) == ["infer2"]
    assert arbiter.submit(req("infer3", kind=INFER)) == []
    assert arbiter.submit(req("train2", kind=TRAIN)) == []
    assert ids(arbiter.release("infer1")) == ["infer3"]
    assert ids(arbiter.release("train")) == ["train2"]


def test_defaults_are_the_designed_ones() -> None:
    assert Limits(training=1, inference=3) == DEFAULT_GPU_LIMITS
    assert Limits(training=2, inference=4) == DEFAULT_CPU_LIMITS


# -- order ---------------------------------------------------------------------------------


def test_lower_priority_number_runs_first(clock: ManualClock) -> None:
    arbiter = cpu_arbiter(clock)
    arbiter.submit(req("running"))
    for job_id, priority in [("p7", 7), ("p2", 2), ("p5", 5), ("p0", 0), ("p10", 10)]:
        assert arbiter.submit(req(job_id, priority)) == []
    order = []
    last = "running"
    for _ in range(5):
        (admission,) = arbiter.release(last)
        order.append(last := admission.job_id)
    assert order == ["p0", "p2", "p5", "p7", "p10"]


def test_equal_priority_runs_in_submit_order(clock: ManualClock) -> None:
    arbiter = cpu_arbiter(clock)
    arbiter.submit(req("running"))
    for i in range(5):
        clock.advance(0.001)
        arbiter.submit(req(f"j{i}", 3))
    order = []
    last = "running"
    for _ in range(5):
        (admission,) = arbiter.release(last)
        order.append(last := admission.job_id)
    assert order == [f"j{i}" for i in range(5)]


def test_equal_priority_and_equal_time_still_fifo(clock: ManualClock) -> None:
    arbiter = cpu_arbiter(clock)
    arbiter.submit(req("running"))
    arbiter.submit(req("first"))
    arbiter.submit(req("second"))  # same clock reading: arrival order decides
    assert ids(arbiter.release("running")) == ["first"]


# -- no barging ----------------------------------------------------------------------------


def test_freed_slot_goes_to_the_waiter_not_to_a_newcomer(clock: ManualClock) -> None:
    arbiter = cpu_arbiter(clock)
    arbiter.submit(req("running"))
    arbiter.submit(req("waiter", 9))
    assert ids(arbiter.release("running")) == ["waiter"]
    assert arbiter.try_admit_now(req("newcomer", 0)) is None
    assert arbiter.submit(req("newcomer", 0)) == []


def test_try_admit_now_admits_only_into_a_free_slot_and_never_enqueues(clock: ManualClock) -> None:
    arbiter = cpu_arbiter(clock)
    assert arbiter.try_admit_now(req("a")) == Admission("a", "cpu", TRAIN)
    assert arbiter.try_admit_now(req("b")) is None
    assert arbiter.waiting_info("b") is None
    assert arbiter.statistics().total_waiting == 0
    assert arbiter.release("a") == []


def test_try_admit_now_does_not_pass_a_more_urgent_waiter_held_by_the_gate(
    clock: ManualClock,
) -> None:
    gate = MemoryBudget({"cpu": 10})
    arbiter = cpu_arbiter(clock, gate=gate)
    assert arbiter.submit(req("big", 3, memory=50)) == []  # slot free, memory short
    assert arbiter.try_admit_now(req("small-later", 5, memory=1)) is None
    assert arbiter.try_admit_now(req("small-urgent", 1, memory=1)) == Admission(
        "small-urgent", "cpu", TRAIN
    )


def test_a_multi_device_waiter_beats_a_less_urgent_single_device_one(clock: ManualClock) -> None:
    arbiter = Arbiter({"cuda:0": Limits(1, 1), "cuda:1": Limits(1, 1)}, clock=clock)
    arbiter.submit(req("on0", devices=("cuda:0",)))
    arbiter.submit(req("on1", devices=("cuda:1",)))
    arbiter.submit(req("only0", 5, ("cuda:0",)))
    arbiter.submit(req("any", 1, ("cuda:1", "cuda:0")))
    assert arbiter.release("on0") == [Admission("any", "cuda:0", TRAIN)]
    assert arbiter.release("on1") == []  # "any" is gone from cuda:1's line too
    assert arbiter.release("any") == [Admission("only0", "cuda:0", TRAIN)]


# -- devices -------------------------------------------------------------------------------


def test_multi_gpu_job_takes_the_first_listed_free_device(clock: ManualClock) -> None:
    gpus = {f"cuda:{i}": Limits(1, 3) for i in range(3)}
    arbiter = Arbiter(gpus, clock=clock)
    assert arbiter.submit(req("a", devices=("cuda:2", "cuda:0", "cuda:1"))) == [
        Admission("a", "cuda:2", TRAIN)
    ]
    assert arbiter.submit(req("b", devices=("cuda:2", "cuda:0", "cuda:1"))) == [
        Admission("b", "cuda:0", TRAIN)
    ]
    assert arbiter.submit(req("c", devices=("cuda:1", "cuda:2"))) == [
        Admission("c", "cuda:1", TRAIN)
    ]
    assert arbiter.submit(req("d", devices=("cuda:0", "cuda:1", "cuda:2"))) == []
    assert arbiter.release("c") == [Admission("d", "cuda:1", TRAIN)]


def test_a_blocked_job_does_not_hold_back_other_pools(clock: ManualClock) -> None:
    arbiter = Arbiter({"cuda:0": Limits(1, 1), "cuda:1": Limits(1, 1)}, clock=clock)
    arbiter.submit(req("busy", devices=("cuda:0",)))
    assert arbiter.submit(req("urgent", 0, ("cuda:0",))) == []
    assert ids(arbiter.submit(req("lazy", 10, ("cuda:1",)))) == ["lazy"]
    assert ids(arbiter.submit(req("lazy-infer", 10, ("cuda:0",), INFER))) == ["lazy-infer"]


def test_add_and_remove_devices(clock: ManualClock) -> None:
    arbiter = Arbiter({"cuda:0": Limits(1, 1)}, clock=clock)
    arbiter.add_device("cuda:1", Limits(0, 1))
    assert list(arbiter.devices) == ["cuda:0", "cuda:1"]
    arbiter.submit(req("run0", devices=("cuda:0",)))
    arbiter.submit(req("only1", devices=("cuda:1",)))
    arbiter.submit(req("either", devices=("cuda:1", "cuda:0")))
    with pytest.raises(ValueError, match="cuda:0 still runs 1 job"):
        arbiter.remove_device("cuda:0")
    assert arbiter.remove_device("cuda:1") == ["only1"]
    assert arbiter.devices == ("cuda:0",)
    assert arbiter.waiting_info("only1") is None
    assert arbiter.release("run0") == [Admission("either", "cuda:0", TRAIN)]
    with pytest.raises(ValueError, match="already known"):
        arbiter.add_device("cuda:0", Limits(1, 1))
    with pytest.raises(KeyError):
        arbiter.remove_device("cuda:7")


# -- run-time limits -----------------------------------------------------------------------


def test_growing_a_limit_admits_at_once_in_priority_order(clock: ManualClock) -> None:
    arbiter = cpu_arbiter(clock)
    arbiter.submit(req("running"))
    for job_id, priority in [("c", 6), ("a", 1), ("b", 4)]:
        arbiter.submit(req(job_id, priority))
    assert ids(arbiter.set_limits("cpu", training=3)) == ["a", "b"]
    assert arbiter.limits("cpu") == Limits(3, 1)


def test_shrinking_never_evicts_and_holds_until_under_the_new_limit(clock: ManualClock) -> None:
    arbiter = cpu_arbiter(clock, training=3)
    for job_id in "abc":
        arbiter.submit(req(job_id))
    arbiter.submit(req("waiter"))
    assert arbiter.set_limits("cpu", training=1) == []
    assert set(arbiter.running()) == {"a", "b", "c"}
    info = arbiter.waiting_info("waiter")
    assert info is not None
    assert info.reason == "3 cpu training tasks running, over the lowered limit of 1"
    assert arbiter.release("a") == []
    assert arbiter.release("b") == []
    assert ids(arbiter.release("c")) == ["waiter"]


def test_set_limits_rejects_unknown_devices_and_negative_limits(clock: ManualClock) -> None:
    arbiter = cpu_arbiter(clock)
    with pytest.raises(KeyError, match="unknown device 'cuda:0'"):
        arbiter.set_limits("cuda:0", training=1)
    with pytest.raises(ValueError, match="0 or more"):
        arbiter.set_limits("cpu", inference=-1)
    assert arbiter.limits("cpu") == Limits(1, 1)  # a refused change changes nothing
    assert arbiter.set_limits("cpu", inference=5) == []
    assert arbiter.limits("cpu") == Limits(1, 5)  # training kept


def test_a_zero_limit_pauses_a_pool(clock: ManualClock) -> None:
    arbiter = cpu_arbiter(clock, training=0)
    assert arbiter.submit(req("t")) == []
    info = arbiter.waiting_info("t")
    assert info is not None and info.reason == "cpu training is paused (limit 0)"
    assert ids(arbiter.set_limits("cpu", training=1)) == ["t"]


# -- cancel and release --------------------------------------------------------------------


def test_cancel_removes_a_waiting_job_only(clock: ManualClock) -> None:
    arbiter = cpu_arbiter(clock)
    arbiter.submit(req("running"))
    arbiter.submit(req("doomed", 0))
    arbiter.submit(req("next", 5))
    assert arbiter.cancel("doomed") is True
    assert arbiter.cancel("doomed") is False
    assert arbiter.cancel("running") is False
    assert arbiter.cancel("never-seen") is False
    assert "running" in arbiter.running()
    assert ids(arbiter.release("running")) == ["next"]
    # A cancelled id may be used again: it is gone, not remembered.
    assert arbiter.submit(req("doomed")) == []


def test_release_of_a_job_that_is_not_running_is_an_error(clock: ManualClock) -> None:
    arbiter = cpu_arbiter(clock)
    arbiter.submit(req("a"))
    arbiter.submit(req("b"))
    with pytest.raises(KeyError, match="not running"):
        arbiter.release("b")  # waiting, not running
    arbiter.release("a")
    with pytest.raises(KeyError, match="not running"):
        arbiter.release("a")


def test_heavy_cancelling_keeps_the_line_consistent(clock: ManualClock) -> None:
    # Enough cancels to trigger compaction of the lazily-deleted entries.
    arbiter = Arbiter({"cpu": Limits(1, 1), "cuda:0": Limits(1, 1)}, clock=clock)
    arbiter.submit(req("running", devices=("cpu",)))
    arbiter.submit(req("running0", devices=("cuda:0",)))
    for i in range(3000):
        arbiter.submit(req(f"j{i}", i % 11, ("cpu", "cuda:0")))
    for i in range(3000):
        if i % 3:
            assert arbiter.cancel(f"j{i}")
    kept = [f"j{i}" for i in range(3000) if i % 3 == 0]
    assert arbiter.statistics().waiting("cpu", TRAIN) == len(kept)
    admitted = []
    last = "running"
    while True:
        result = arbiter.release(last)
        if not result:
            break
        (admission,) = result
        admitted.append(last := admission.job_id)
    assert sorted(admitted) == sorted(kept)
    assert admitted == sorted(kept, key=lambda job: (int(job[1:]) % 11, int(job[1:])))


# -- queue bound and validation ------------------------------------------------------------


def test_queue_full_is_raised_only_when_the_job_would_wait(clock: ManualClock) -> None:
    arbiter = Arbiter({"cpu": Limits(1, 1)}, max_waiting=2, clock=clock)
    arbiter.submit(req("run"))
    arbiter.submit(req("w1"))
    arbiter.submit(req("w2"))
    with pytest.raises(QueueFull, match="2 tasks are already waiting"):
        arbiter.submit(req("w3"))
    assert arbiter.waiting_info("w3") is None
    assert arbiter.statistics().total_waiting == 2
    # A job that can start at once is not refused because others wait elsewhere.
    assert ids(arbiter.submit(req("infer", kind=INFER))) == ["infer"]


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (req("x", devices=("cuda:0",)), "unknown device 'cuda:0'; known devices: cpu"),
        (req("x", devices=()), "names no device"),
        (req("x", devices=("cpu", "cpu")), "lists a device twice"),
        (req("x", priority=11), "between 0 .* and 10, not 11"),
        (req("x", priority=-1), "not -1"),
        (dataclasses.replace(req("x"), priority=True), "must be an integer"),
        (req("", priority=1), "non-empty string"),
        (req("x", memory=-1), "memory_bytes"),
        (req("x", submit_time=math.nan), "finite"),
    ],
)
def test_bad_requests_are_refused_and_change_nothing(
    clock: ManualClock, request_: Request, message: str
) -> None:
    arbiter = cpu_arbiter(clock)
    with pytest.raises(ValueError, match=message):
        arbiter.submit(request_)
    with pytest.raises(ValueError, match=message):
        arbiter.try_admit_now(request_)
    assert arbiter.statistics().total_waiting == 0 and not arbiter.running()


def test_a_job_id_cannot_be_waiting_or_running_twice(clock: ManualClock) -> None:
    arbiter = cpu_arbiter(clock)
    arbiter.submit(req("a"))
    arbiter.submit(req("b"))
    with pytest.raises(ValueError, match="'a' is already running"):
        arbiter.submit(req("a", kind=INFER))
    with pytest.raises(ValueError, match="'b' is already waiting"):
        arbiter.try_admit_now(req("b", kind=INFER))


def test_constructor_and_value_checks() -> None:
    with pytest.raises(ValueError, match="aging_interval_s"):
        Arbiter({"cpu": Limits(1, 1)}, aging_interval_s=0)
    with pytest.raises(ValueError, match="max_waiting"):
        Arbiter({"cpu": Limits(1, 1)}, max_waiting=-1)
    with pytest.raises(ValueError, match="training limit must be 0 or more"):
        Limits(-1, 1)
    with pytest.raises(TypeError, match="must be an int"):
        Limits(True, 1)
    assert check_priority(0) == 0
    with pytest.raises(ValueError):
        check_priority(10.0)


# -- aging ---------------------------------------------------------------------------------


def test_aging_lifts_a_waiting_job_one_step_per_interval(clock: ManualClock) -> None:
    arbiter = cpu_arbiter(clock, aging_interval_s=60.0)
    arbiter.submit(req("running"))
    arbiter.submit(req("old", 7))
    clock.advance(100)
    arbiter.submit(req("young", 5))
    clock.advance(19.5)  # old waited 119.5 s: 7 -> 6; young still 5
    info = arbiter.waiting_info("old")
    assert info is not None and info.effective_priority == 6 and info.priority == 7
    assert info.position == 2 and info.waited_s == pytest.approx(119.5)
    clock.advance(0.5)  # old waited 120 s: 7 -> 5, ties with young and was submitted first
    info = arbiter.waiting_info("old")
    assert info is not None and info.effective_priority == 5 and info.position == 1
    assert ids(arbiter.release("running")) == ["old"]


def test_aging_stops_at_zero_and_then_submit_order_decides(clock: ManualClock) -> None:
    arbiter = cpu_arbiter(clock, aging_interval_s=10.0)
    arbiter.submit(req("running"))
    arbiter.submit(req("lazy", 10))
    clock.advance(1)
    arbiter.submit(req("urgent", 0))
    clock.advance(10_000)
    for job_id in ("lazy", "urgent"):
        info = arbiter.waiting_info(job_id)
        assert info is not None and info.effective_priority == 0
    assert ids(arbiter.release("running")) == ["lazy"]


def test_aging_can_be_turned_off(clock: ManualClock) -> None:
    arbiter = cpu_arbiter(clock, aging_interval_s=math.inf)
    arbiter.submit(req("running"))
    arbiter.submit(req("lazy", 10))
    clock.advance(1e9)
    arbiter.submit(req("urgent", 9))
    assert ids(arbiter.release("running")) == ["urgent"]


def test_an_explicit_submit_time_keeps_a_requeued_job_in_its_place(clock: ManualClock) -> None:
    arbiter = cpu_arbiter(clock, aging_interval_s=60.0)
    arbiter.submit(req("running"))
    arbiter.submit(req("new", 5))
    arbiter.submit(req("requeued", 5, submit_time=clock.now - 30))
    info = arbiter.waiting_info("requeued")
    assert info is not None and info.position == 1 and info.waited_s == 30
    assert ids(arbiter.release("running")) == ["requeued"]


def test_tick_is_a_no_op_without_a_gate(clock: ManualClock) -> None:
    arbiter = cpu_arbiter(clock)
    arbiter.submit(req("running"))
    arbiter.submit(req("waiting"))
    clock.advance(3600)
    assert arbiter.tick() == []


# -- the admission gate (memory seam) ------------------------------------------------------


def test_a_head_that_does_not_fit_holds_its_pool_until_it_does(clock: ManualClock) -> None:
    gate = MemoryBudget({"cuda:0": 8})
    arbiter = Arbiter({"cuda:0": Limits(2, 2)}, clock=clock, gate=gate)
    assert ids(arbiter.submit(req("a", 5, ("cuda:0",), memory=6))) == ["a"]
    assert arbiter.submit(req("big", 1, ("cuda:0",), memory=4)) == []
    # Less urgent and small enough, but "big" is first in line: no backfill past it.
    assert arbiter.submit(req("small", 9, ("cuda:0",), memory=1)) == []
    info = arbiter.waiting_info("big")
    assert info is not None
    assert info.reason == "needs 4 on cuda:0, 2 free"  # the gate's own sentence
    small = arbiter.waiting_info("small")
    assert small is not None and small.reason == "1 more urgent task ahead"
    gate.free["cuda:0"] += 2  # another process freed memory: the arbiter hears of it on tick
    info = arbiter.waiting_info("big")
    assert info is not None
    assert info.reason == "a slot is free on cuda:0; it is given out at the next pass"
    assert ids(arbiter.tick()) == ["big"]
    assert arbiter.release("a") == [Admission("small", "cuda:0", TRAIN)]
    assert gate.free == {"cuda:0": 8 - 4 - 1 + 2}


def test_a_slot_held_for_a_job_that_does_not_fit_is_not_taken_by_a_later_one(
    clock: ManualClock,
) -> None:
    gate = MemoryBudget({"cuda:0": 10, "cuda:1": 10})
    arbiter = Arbiter({"cuda:0": Limits(1, 1), "cuda:1": Limits(1, 1)}, clock=clock, gate=gate)
    assert arbiter.submit(req("held", 1, ("cuda:0",), memory=20)) == []
    # cuda:0 is listed first and its slot is free, but it is held for "held".
    assert arbiter.submit(req("later", 5, ("cuda:0", "cuda:1"), memory=1)) == [
        Admission("later", "cuda:1", TRAIN)
    ]
    assert arbiter.try_admit_now(req("also-later", 5, ("cuda:0",), memory=1)) is None


def test_a_job_held_on_one_gpu_does_not_hold_back_another_gpu(clock: ManualClock) -> None:
    gate = MemoryBudget({"cuda:0": 10, "cuda:1": 10})
    arbiter = Arbiter({"cuda:0": Limits(1, 1), "cuda:1": Limits(1, 1)}, clock=clock, gate=gate)
    arbiter.submit(req("runner", 5, ("cuda:0",), memory=1))
    assert arbiter.submit(req("held", 1, ("cuda:1",), memory=20)) == []
    assert arbiter.submit(req("next", 9, ("cuda:0",), memory=1)) == []
    # Both pools open at once: "held" is most urgent but fits nowhere; "next" still starts.
    assert arbiter.release("runner") == [Admission("next", "cuda:0", TRAIN)]


def test_a_job_that_does_not_fit_on_one_gpu_goes_to_the_next(clock: ManualClock) -> None:
    gate = MemoryBudget({"cuda:0": 1, "cuda:1": 10})
    arbiter = Arbiter({"cuda:0": Limits(1, 1), "cuda:1": Limits(1, 1)}, clock=clock, gate=gate)
    assert arbiter.submit(req("a", devices=("cuda:0", "cuda:1"), memory=5)) == [
        Admission("a", "cuda:1", TRAIN)
    ]


def test_a_failing_gate_counts_as_does_not_fit(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    class BrokenGate(MemoryBudget):
        def fits(self, request: Request, device: str) -> bool:
            raise RuntimeError("boom")

    arbiter = cpu_arbiter(clock, gate=BrokenGate({"cpu": 1}))
    with caplog.at_level(logging.ERROR, logger="scheduler.arbiter"):
        assert arbiter.submit(req("a")) == []
    assert "admission gate failed for job 'a' on cpu" in caplog.text


# -- explanations and snapshots ------------------------------------------------------------


def test_waiting_info_positions_and_reasons(clock: ManualClock) -> None:
    arbiter = Arbiter(
        {"cpu": Limits(2, 4), "cuda:0": Limits(1, 3), "cuda:1": Limits(1, 3)}, clock=clock
    )
    arbiter.submit(req("c1"))
    arbiter.submit(req("c2"))
    arbiter.submit(req("cpu-a", 2))
    arbiter.submit(req("cpu-b", 5))
    arbiter.submit(req("cpu-c", 5))
    a, c = arbiter.waiting_info("cpu-a"), arbiter.waiting_info("cpu-c")
    assert a is not None and (a.position, a.reason) == (1, "2 of 2 cpu training slots busy")
    assert c is not None and c.position == 3
    assert c.reason == "2 more urgent tasks ahead; 2 of 2 cpu training slots busy"

    arbiter.submit(req("g0", devices=("cuda:0",)))
    arbiter.submit(req("g1", devices=("cuda:1",)))
    arbiter.submit(req("only1", 4, ("cuda:1",)))
    arbiter.submit(req("any-gpu", 5, ("cuda:0", "cuda:1")))
    any_gpu = arbiter.waiting_info("any-gpu")
    assert any_gpu is not None and any_gpu.position == 2  # only1 shares cuda:1; cpu jobs don't
    assert any_gpu.reason == (
        "1 more urgent task ahead; all training slots busy on cuda:0 (1 of 1), cuda:1 (1 of 1)"
    )
    assert arbiter.waiting_info("c1") is None  # running
    assert arbiter.waiting_info("nobody") is None
    everything = arbiter.waiting_infos()
    assert set(everything) == {"cpu-a", "cpu-b", "cpu-c", "only1", "any-gpu"}
    for job_id, info in everything.items():
        assert arbiter.waiting_info(job_id) == info


def test_statistics_and_running_are_snapshots(clock: ManualClock) -> None:
    arbiter = Arbiter({"cpu": Limits(1, 1), "cuda:0": Limits(1, 3)}, clock=clock)
    arbiter.submit(req("a"))
    arbiter.submit(req("b", devices=("cpu", "cuda:0")))
    arbiter.submit(req("c", devices=("cpu", "cuda:0")))
    stats = arbiter.statistics()
    running = arbiter.running()
    arbiter.release("a")
    assert stats.running("cpu", TRAIN) == 1 and stats.waiting("cpu", TRAIN) == 1
    assert stats.waiting("cuda:0", TRAIN) == 1 and stats.total_waiting == 1
    assert stats.pool("cuda:0", INFER).free == 3
    assert set(running) == {"a", "b"}
    assert set(arbiter.running()) == {"b", "c"}
    with pytest.raises(TypeError):
        running["x"] = Admission("x", "cpu", TRAIN)  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.total_waiting = 0  # type: ignore[misc]
    with pytest.raises(KeyError):
        stats.pool("cuda:9", TRAIN)
