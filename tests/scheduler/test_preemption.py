"""Preemption planning: who is asked to yield, for whom, and who gets the room it frees.

Victims are chosen by the arbiter alone (the server carries the plans out); memory is
judged by the real MemoryGate over the fake GPU inventory, time by a clock that moves
only when a test says so.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from scheduler import (
    Admission,
    Arbiter,
    Kind,
    Limits,
    PreemptionPlan,
    QueueFull,
    Request,
    StaticInventory,
)
from scheduler._preempt import SEARCH_BUDGET, RunningJob, fewest_victims
from scheduler.memory import GIB, MemoryGate

TRAIN, INFER = Kind.TRAINING, Kind.INFERENCE
MARGIN = 2
MIN_RUNTIME_S = 60.0
AGING_S = 60.0


class Clock:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def train(
    job_id: str,
    priority: int,
    devices: tuple[str, ...] = ("cpu",),
    *,
    gib: float = 0,
    preemptible: bool = True,
    submit_time: float | None = None,
) -> Request:
    return Request(
        job_id,
        TRAIN,
        priority,
        devices,
        submit_time=submit_time,
        memory_bytes=int(gib * GIB),
        preemptible=preemptible,
    )


def infer(
    job_id: str,
    priority: int,
    devices: tuple[str, ...] = ("cpu",),
    *,
    gib: float = 0,
    preemptible: bool = False,
) -> Request:
    return Request(
        job_id, INFER, priority, devices, memory_bytes=int(gib * GIB), preemptible=preemptible
    )


def plan(arbiter: Arbiter) -> list[PreemptionPlan]:
    return arbiter.plan_preemptions(margin=MARGIN, min_runtime_s=MIN_RUNTIME_S)


def cpu_arbiter(clock: Clock, training: int = 1, inference: int = 1) -> Arbiter:
    return Arbiter({"cpu": Limits(training, inference)}, aging_interval_s=AGING_S, clock=clock)


def gpus(
    clock: Clock, count: int = 1, *, training: int = 1, inference: int = 3
) -> tuple[StaticInventory, MemoryGate, Arbiter]:
    """`count` GPUs of 16 GiB with 1 GiB of headroom each: 15 GiB for tasks."""
    inventory = StaticInventory.uniform(count, total_bytes=16 * GIB)
    gate = MemoryGate(inventory, headroom_bytes=GIB)
    limits = {"cpu": Limits(2, 4)}
    limits |= {f"cuda:{i}": Limits(training, inference) for i in range(count)}
    return inventory, gate, Arbiter(limits, aging_interval_s=AGING_S, clock=clock, gate=gate)


def start(arbiter: Arbiter, *requests: Request) -> None:
    """Admit `requests` at once (the test relies on each starting now)."""
    for request in requests:
        assert [a.job_id for a in arbiter.submit(request)] == [request.job_id]


@pytest.fixture
def clock() -> Clock:
    return Clock()


# -- who is chosen -------------------------------------------------------------------------


def test_a_more_urgent_training_preempts_a_less_urgent_one_and_gets_its_slot(
    clock: Clock,
) -> None:
    arbiter = cpu_arbiter(clock)
    start(arbiter, train("lazy", 7))
    clock.now += MIN_RUNTIME_S
    assert arbiter.submit(train("urgent", 2)) == []
    assert plan(arbiter) == [PreemptionPlan("urgent", "cpu", ("lazy",))]
    assert arbiter.yielding() == {"lazy"}
    assert arbiter.release("lazy") == [Admission("urgent", "cpu", TRAIN)]
    assert arbiter.yielding() == frozenset()


def test_a_difference_smaller_than_the_margin_plans_nothing(clock: Clock) -> None:
    arbiter = cpu_arbiter(clock)
    start(arbiter, train("running", 5))
    clock.now += MIN_RUNTIME_S
    arbiter.submit(train("slightly-urgent", 5 - MARGIN + 1))
    assert plan(arbiter) == []
    assert arbiter.yielding() == frozenset()


def test_a_difference_of_exactly_the_margin_is_enough(clock: Clock) -> None:
    arbiter = cpu_arbiter(clock)
    start(arbiter, train("running", 5))
    clock.now += MIN_RUNTIME_S
    arbiter.submit(train("urgent", 5 - MARGIN))
    assert plan(arbiter) == [PreemptionPlan("urgent", "cpu", ("running",))]


def test_a_victim_is_chosen_only_once_it_has_run_min_runtime(clock: Clock) -> None:
    arbiter = cpu_arbiter(clock)
    start(arbiter, train("fresh", 9))
    arbiter.submit(train("urgent", 1))
    clock.now += MIN_RUNTIME_S - 1
    assert plan(arbiter) == []
    clock.now += 1
    assert plan(arbiter) == [PreemptionPlan("urgent", "cpu", ("fresh",))]


def test_a_job_that_is_not_preemptible_is_never_chosen(clock: Clock) -> None:
    arbiter = cpu_arbiter(clock)
    start(arbiter, train("opted-out", 10, preemptible=False))
    arbiter.submit(train("urgent", 0))
    clock.now += 100 * MIN_RUNTIME_S
    assert plan(arbiter) == []
    assert arbiter.yielding() == frozenset()


def test_inference_jobs_are_never_victims(clock: Clock) -> None:
    _, _, arbiter = gpus(clock)
    # A served model at the least urgent priority holds most of the GPU; even marked
    # preemptible, it is not asked to yield (it has no checkpoint to resume from).
    start(arbiter, infer("served", 10, ("cuda:0",), gib=12, preemptible=True))
    clock.now += MIN_RUNTIME_S
    assert arbiter.submit(train("urgent", 0, ("cuda:0",), gib=8)) == []
    assert plan(arbiter) == []


def test_an_inference_waiter_whose_inference_pool_is_full_plans_nothing(clock: Clock) -> None:
    arbiter = cpu_arbiter(clock, training=1, inference=1)
    start(arbiter, train("lazy-training", 10), infer("predict", 9, preemptible=True))
    clock.now += MIN_RUNTIME_S
    assert arbiter.submit(infer("urgent-predict", 0)) == []
    assert plan(arbiter) == []


def test_one_big_victim_is_preferred_to_two_small_less_urgent_ones(clock: Clock) -> None:
    _, _, arbiter = gpus(clock, training=3)
    start(
        arbiter,
        train("big", 6, ("cuda:0",), gib=8),
        train("small-1", 9, ("cuda:0",), gib=3),
        train("small-2", 9, ("cuda:0",), gib=3),
    )
    clock.now += MIN_RUNTIME_S
    # 1 GiB free; either small one frees 3 more (not enough), the big one 8 (enough).
    assert arbiter.submit(train("urgent", 1, ("cuda:0",), gib=6)) == []
    assert plan(arbiter) == [PreemptionPlan("urgent", "cuda:0", ("big",))]


def test_among_equally_few_victims_the_least_urgent_then_the_last_started_goes(
    clock: Clock,
) -> None:
    arbiter = cpu_arbiter(clock, training=3)
    start(arbiter, train("lazy-first", 9))
    clock.now += 1
    start(arbiter, train("lazy-second", 9))
    clock.now += 1
    start(arbiter, train("less-lazy-last", 8))
    clock.now += MIN_RUNTIME_S
    arbiter.submit(train("urgent", 1))
    assert plan(arbiter) == [PreemptionPlan("urgent", "cpu", ("lazy-second",))]


def test_no_plan_when_even_every_candidate_leaving_would_not_make_room(clock: Clock) -> None:
    inventory, _, arbiter = gpus(clock, training=2)
    start(arbiter, train("a", 9, ("cuda:0",), gib=4), train("b", 9, ("cuda:0",), gib=4))
    inventory.set_used(0, 12 * GIB)  # a and b, and 4 GiB of another process
    clock.now += MIN_RUNTIME_S
    # Without a and b: 12 GiB free, 11 after headroom.
    assert arbiter.submit(train("huge", 0, ("cuda:0",), gib=12)) == []
    assert plan(arbiter) == []
    assert arbiter.yielding() == frozenset()


def test_an_inference_waiter_blocked_by_memory_preempts_the_training_that_holds_it(
    clock: Clock,
) -> None:
    # The seed's scenario: training at 7, latency-sensitive inference at 2.
    _, _, arbiter = gpus(clock)
    start(arbiter, train("training", 7, ("cuda:0",), gib=12))
    clock.now += MIN_RUNTIME_S
    assert arbiter.submit(infer("predict", 2, ("cuda:0",), gib=6)) == []  # 3 GiB free
    assert plan(arbiter) == [PreemptionPlan("predict", "cuda:0", ("training",))]
    assert arbiter.release("training") == [Admission("predict", "cuda:0", INFER)]


def test_a_waiter_that_fits_now_preempts_nobody(clock: Clock) -> None:
    inventory, _, arbiter = gpus(clock)
    inventory.set_used(0, 14 * GIB)  # another process holds most of the GPU
    start(arbiter, train("training", 9, ("cuda:0",), gib=1))
    clock.now += MIN_RUNTIME_S
    assert arbiter.submit(infer("predict", 1, ("cuda:0",), gib=6)) == []
    inventory.set_used(0, 4 * GIB)  # it let go; the arbiter has not looked yet
    assert plan(arbiter) == []
    assert arbiter.tick() == [Admission("predict", "cuda:0", INFER)]


def test_plans_come_in_the_urgency_order_of_their_waiters(clock: Clock) -> None:
    arbiter = Arbiter({"cpu": Limits(1, 1), "cuda:0": Limits(1, 1)}, clock=clock)
    start(arbiter, train("lazy-gpu", 9, ("cuda:0",)), train("lazy-cpu", 9))
    clock.now += MIN_RUNTIME_S
    arbiter.submit(train("urgent-gpu", 3, ("cuda:0",)))
    arbiter.submit(train("more-urgent-cpu", 1))
    assert plan(arbiter) == [
        PreemptionPlan("more-urgent-cpu", "cpu", ("lazy-cpu",)),
        PreemptionPlan("urgent-gpu", "cuda:0", ("lazy-gpu",)),
    ]


# -- the reservation -----------------------------------------------------------------------


def two_victims(clock: Clock, gpu_count: int = 1) -> tuple[StaticInventory, Arbiter]:
    """Trainings v1 and v2 run on cuda:0; "urgent" needs the memory of both and has
    them asked to yield: the first to go frees a slot but not yet enough memory."""
    inventory, _, arbiter = gpus(clock, gpu_count, training=2)
    start(arbiter, train("v1", 7, ("cuda:0",), gib=6))
    clock.now += 1
    start(arbiter, train("v2", 7, ("cuda:0",), gib=6))
    clock.now += MIN_RUNTIME_S
    assert arbiter.submit(train("urgent", 2, ("cuda:0",), gib=12)) == []
    assert plan(arbiter) == [PreemptionPlan("urgent", "cuda:0", ("v2", "v1"))]
    return inventory, arbiter


def test_a_requeued_victim_does_not_barge_past_the_job_that_preempted_it(clock: Clock) -> None:
    _, arbiter = two_victims(clock)
    assert arbiter.release("v2") == []  # 9 GiB for "urgent" now; it needs 12
    # Requeued with a submit time that ages it past "urgent"; it would fit in 9 GiB.
    assert arbiter.submit(train("v2", 7, ("cuda:0",), gib=6, submit_time=0.0)) == []
    v2 = arbiter.waiting_info("v2")
    assert v2 is not None and v2.position == 1
    assert arbiter.release("v1") == [Admission("urgent", "cuda:0", TRAIN)]


def test_try_admit_now_does_not_take_a_reserved_slot(clock: Clock) -> None:
    _, arbiter = two_victims(clock)
    arbiter.release("v2")
    assert arbiter.try_admit_now(train("newcomer", 0, ("cuda:0",), gib=1)) is None


def test_a_more_urgent_job_for_several_devices_leaves_the_reserved_one_alone(
    clock: Clock,
) -> None:
    inventory, arbiter = two_victims(clock, gpu_count=2)
    arbiter.release("v2")  # cuda:0: a free training slot and 9 GiB, held for "urgent"
    inventory.set_used(1, 10 * GIB)  # cuda:1: 5 GiB, so the gate would rank cuda:0 first
    either = train("either", 0, ("cuda:0", "cuda:1"), gib=1)
    assert arbiter.submit(either) == [Admission("either", "cuda:1", TRAIN)]


def test_a_pool_reserved_for_one_waiter_is_not_planned_for_by_another(clock: Clock) -> None:
    arbiter = Arbiter({"cuda:0": Limits(2, 1), "cuda:1": Limits(1, 1)}, clock=clock)
    start(arbiter, train("a0", 9, ("cuda:0",)), train("b0", 9, ("cuda:0",)))
    start(arbiter, train("a1", 9, ("cuda:1",)))
    clock.now += MIN_RUNTIME_S
    arbiter.submit(train("first", 1, ("cuda:0",)))
    assert plan(arbiter) == [PreemptionPlan("first", "cuda:0", ("b0",))]
    # "second" prefers cuda:0, where "a0" could go too, but that pool is promised.
    arbiter.submit(train("second", 2, ("cuda:0", "cuda:1")))
    assert plan(arbiter) == [PreemptionPlan("second", "cuda:1", ("a1",))]
    assert arbiter.release("b0") == [Admission("first", "cuda:0", TRAIN)]


def test_a_job_already_yielding_is_not_chosen_again_for_another_waiter(clock: Clock) -> None:
    _, _, arbiter = gpus(clock)
    start(arbiter, train("training", 9, ("cuda:0",), gib=12))
    clock.now += MIN_RUNTIME_S
    arbiter.submit(infer("predict", 1, ("cuda:0",), gib=6))
    assert plan(arbiter) == [PreemptionPlan("predict", "cuda:0", ("training",))]
    # Its training slot goes to "urgent" when it yields; nothing else may go for it.
    arbiter.submit(train("urgent", 0, ("cuda:0",), gib=1))
    assert plan(arbiter) == []


def test_a_waiter_is_planned_for_once_while_its_victims_yield(clock: Clock) -> None:
    arbiter = cpu_arbiter(clock, training=2)
    start(arbiter, train("lazy-1", 9), train("lazy-2", 9))
    clock.now += MIN_RUNTIME_S
    arbiter.submit(train("urgent", 1))
    assert plan(arbiter) == [PreemptionPlan("urgent", "cpu", ("lazy-2",))]
    clock.now += MIN_RUNTIME_S
    assert plan(arbiter) == []  # "lazy-1" could go too, but one is enough
    assert arbiter.yielding() == {"lazy-2"}


def test_a_waiter_plans_again_if_its_victims_left_and_it_still_cannot_start(
    clock: Clock,
) -> None:
    inventory, _, arbiter = gpus(clock, training=2)
    start(arbiter, train("a", 8, ("cuda:0",), gib=6))
    clock.now += 1
    start(arbiter, train("b", 9, ("cuda:0",), gib=6))
    clock.now += MIN_RUNTIME_S
    assert arbiter.submit(train("urgent", 1, ("cuda:0",), gib=8)) == []
    assert plan(arbiter) == [PreemptionPlan("urgent", "cuda:0", ("b",))]
    inventory.set_used(0, 12 * GIB)  # another process took what "b" gave back
    assert arbiter.release("b") == []
    assert plan(arbiter) == [PreemptionPlan("urgent", "cuda:0", ("a",))]


def test_the_reservation_ends_when_its_holder_is_cancelled(clock: Clock) -> None:
    arbiter = cpu_arbiter(clock)
    start(arbiter, train("lazy", 9))
    clock.now += MIN_RUNTIME_S
    arbiter.submit(train("urgent", 1))
    arbiter.submit(train("next", 5))
    assert plan(arbiter) == [PreemptionPlan("urgent", "cpu", ("lazy",))]
    assert arbiter.cancel("urgent")
    assert arbiter.release("lazy") == [Admission("next", "cpu", TRAIN)]


def test_a_spent_reservation_does_not_hold_a_free_slot_from_others(clock: Clock) -> None:
    # The holder could not take the room its victim left (another process took the
    # memory): the reservation ends, and a more urgent job that fits takes the slot
    # (with the reservation in place nobody but the holder could have).
    inventory, _, arbiter = gpus(clock)
    start(arbiter, train("lazy", 9, ("cuda:0",), gib=10))
    clock.now += MIN_RUNTIME_S
    assert arbiter.submit(train("urgent", 1, ("cuda:0",), gib=12)) == []
    assert plan(arbiter) == [PreemptionPlan("urgent", "cuda:0", ("lazy",))]
    inventory.set_used(0, 10 * GIB)  # taken by another process as "lazy" left
    assert arbiter.release("lazy") == []
    assert arbiter.submit(train("small", 0, ("cuda:0",), gib=2)) == [
        Admission("small", "cuda:0", TRAIN)
    ]


def test_planning_skips_a_device_removed_since_the_waiter_queued(clock: Clock) -> None:
    arbiter = Arbiter(
        {"n1": Limits(0, 1), "n2": Limits(1, 1)}, aging_interval_s=AGING_S, clock=clock
    )
    start(arbiter, train("lazy", 9, ("n2",)))
    clock.now += MIN_RUNTIME_S
    assert arbiter.submit(train("urgent", 1, ("n1", "n2"))) == []
    assert arbiter.remove_device("n1") == []  # it still waits, for n2 now
    assert plan(arbiter) == [PreemptionPlan("urgent", "n2", ("lazy",))]


def test_a_returning_job_is_never_refused_for_a_full_line(clock: Clock) -> None:
    arbiter = Arbiter({"cpu": Limits(1, 1)}, max_waiting=1, aging_interval_s=AGING_S, clock=clock)
    start(arbiter, train("running", 5))
    arbiter.submit(train("waiting", 5))
    with pytest.raises(QueueFull):
        arbiter.submit(train("new", 5))
    assert arbiter.submit(train("preempted", 7), returning=True) == []
    assert arbiter.waiting_info("preempted") is not None


# -- explanations --------------------------------------------------------------------------


def test_waiting_info_names_the_victims_and_the_device(clock: Clock) -> None:
    _, arbiter = two_victims(clock)
    both = "about to preempt tasks v2, v1 on cuda:0: they save a checkpoint and yield their slots"
    info = arbiter.waiting_info("urgent")
    assert info is not None and info.reason == both
    assert arbiter.waiting_infos()["urgent"].reason == both
    arbiter.release("v2")
    info = arbiter.waiting_info("urgent")
    assert info is not None
    assert (
        info.reason
        == "about to preempt task v1 on cuda:0: it saves a checkpoint and yields its slot"
    )


# -- the memory gate -----------------------------------------------------------------------


def test_fits_after_counts_the_memory_of_released_jobs_on_that_device_only() -> None:
    gate = MemoryGate(StaticInventory.uniform(2, total_bytes=16 * GIB), headroom_bytes=GIB)
    here = [Admission("a", "cuda:0", TRAIN), Admission("b", "cuda:0", TRAIN)]
    there = Admission("c", "cuda:1", TRAIN)
    for admission in [*here, there]:
        gate.admitted(train(admission.job_id, 5, (admission.device,), gib=6), admission.device)
    request = train("new", 1, ("cuda:0",), gib=8)
    assert not gate.fits(request, "cuda:0")  # 16 - 12 reserved - 1 = 3 GiB
    assert gate.fits_after(request, "cuda:0", here[:1])  # 9 GiB
    assert not gate.fits_after(request, "cuda:0", [there])  # c's memory is on cuda:1
    assert gate.fits_after(request, "cpu", [])


def test_fits_after_needs_nvml_and_the_reservations_to_agree() -> None:
    inventory = StaticInventory.uniform(1, total_bytes=16 * GIB)
    gate = MemoryGate(inventory, headroom_bytes=GIB)
    a, b = Admission("a", "cuda:0", TRAIN), Admission("b", "cuda:0", TRAIN)
    for admission in (a, b):
        gate.admitted(train(admission.job_id, 5, ("cuda:0",), gib=3), "cuda:0")
    inventory.set_used(0, 14 * GIB)  # a, b and 8 GiB of another process
    request = train("new", 1, ("cuda:0",), gib=6)
    assert not gate.fits_after(request, "cuda:0", [a])  # NVML: 2 + 3 free, 4 after headroom
    assert gate.fits_after(request, "cuda:0", [a, b])  # 2 + 6 free, 7 after headroom


# -- the search ----------------------------------------------------------------------------


def test_the_search_for_the_fewest_victims_is_bounded() -> None:
    jobs = [
        RunningJob(Admission(f"j{i}", "cpu", TRAIN), train(f"j{i}", 9), 0.0, 9) for i in range(40)
    ]
    asked = 0

    def ten_or_more(victims: Sequence[RunningJob]) -> bool:
        nonlocal asked
        asked += 1
        return len(victims) >= 10

    # Every combination of up to 9 of 40 would be some 370 million questions.
    assert fewest_victims(jobs, ten_or_more) == tuple(jobs[:10])
    assert asked <= SEARCH_BUDGET + len(jobs) + 1
