"""Random sequences of arbiter calls, with the arbiter's promises checked after every step.

The test keeps its own plain record of who waits and who runs (lists and dicts, no
cleverness) and checks each admission as it is handed out:

- the pool was under its limit, the job was waiting and is admitted once;
- no waiter sharing that pool was more urgent (effective priority, then submit order);
- no device listed earlier by the job had a free slot;

and after every step: nothing lost, counts agree, and no job waits while one of its
slots is free.
"""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from scheduler import Admission, Arbiter, Kind, Limits, QueueFull, Request

DEVICES = ("cpu", "cuda:0", "cuda:1")
INTERVAL = 60
MAX_WAITING = 12

limits_st = st.builds(Limits, st.integers(0, 2), st.integers(0, 3))
kinds_st = st.sampled_from(Kind)
candidates_st = st.lists(st.sampled_from(DEVICES), min_size=1, max_size=3, unique=True)
# Seconds around aging boundaries (INTERVAL = 60), where order flips and ties happen.
seconds_st = st.sampled_from([0, 1, 30, 59, 60, 61, 120, 180, 600])


class Clock:
    def __init__(self) -> None:
        self.now = 10_000

    def __call__(self) -> float:
        return self.now


class Waiting:
    """The test's record of a waiting job."""

    def __init__(self, request: Request, submit_time: float, seq: int) -> None:
        self.request = request
        self.submit_time = submit_time
        self.seq = seq

    def key(self, now: float) -> tuple[int, float, int]:
        waited = now - self.submit_time
        aged = math.floor(waited / INTERVAL) if waited > 0 else 0
        return (max(0, self.request.priority - aged), self.submit_time, self.seq)

    def pools(self) -> set[tuple[str, Kind]]:
        return {(device, self.request.kind) for device in self.request.devices}


class ArbiterMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.limits: dict[str, Limits] = {}
        self.waiting: dict[str, Waiting] = {}
        self.running: dict[str, Admission] = {}
        self.done: set[str] = set()
        self.ids = 0
        self.seq = 0

    @initialize(limits=st.tuples(limits_st, limits_st, limits_st))
    def start(self, limits: tuple[Limits, Limits, Limits]) -> None:
        self.limits = dict(zip(DEVICES, limits, strict=True))
        self.arbiter = Arbiter(
            self.limits, max_waiting=MAX_WAITING, aging_interval_s=INTERVAL, clock=self.clock
        )

    # -- the test's own view ---------------------------------------------------------------

    def in_use(self, device: str, kind: Kind) -> int:
        return sum(1 for a in self.running.values() if (a.device, a.kind) == (device, kind))

    def has_free_slot(self, device: str, kind: Kind) -> bool:
        return self.in_use(device, kind) < self.limits[device].of(kind)

    def new_request(
        self, kind: Kind, priority: int, devices: list[str], age: int | None
    ) -> Request:
        self.ids += 1
        submit_time = None if age is None else self.clock.now - age
        return Request(f"job{self.ids}", kind, priority, tuple(devices), submit_time)

    def accept(self, admissions: list[Admission]) -> None:
        """Check each admission against the state just before it, then record it."""
        now = self.clock.now
        for admission in admissions:
            job_id, device, kind = admission.job_id, admission.device, admission.kind
            assert job_id in self.waiting, f"{job_id} admitted but was not waiting"
            assert job_id not in self.running and job_id not in self.done
            waiter = self.waiting[job_id]
            assert kind is waiter.request.kind and device in waiter.request.devices
            assert self.has_free_slot(device, kind), f"{device} {kind} over its limit"
            for earlier in waiter.request.devices[: waiter.request.devices.index(device)]:
                assert not self.has_free_slot(earlier, kind), f"{earlier} was free and first"
            mine = waiter.key(now)
            for other in self.waiting.values():
                if other is not waiter and (device, kind) in other.pools():
                    assert other.key(now) > mine, f"{other.request.job_id} barged past"
            del self.waiting[job_id]
            self.running[job_id] = admission

    # -- rules -----------------------------------------------------------------------------

    @rule(
        kind=kinds_st,
        priority=st.integers(0, 10),
        devices=candidates_st,
        age=st.none() | seconds_st,
    )
    def submit(self, kind: Kind, priority: int, devices: list[str], age: int | None) -> None:
        request = self.new_request(kind, priority, devices, age)
        if len(self.waiting) >= MAX_WAITING:
            free = [d for d in devices if self.has_free_slot(d, kind)]
            try:
                admissions = self.arbiter.submit(request)
            except QueueFull:
                assert not free
                return
            assert admissions == [Admission(request.job_id, free[0], kind)]
            self.running[request.job_id] = admissions[0]
            return
        submit_time = self.clock.now if age is None else request.submit_time
        assert submit_time is not None
        self.seq += 1
        self.waiting[request.job_id] = Waiting(request, submit_time, self.seq)
        self.accept(self.arbiter.submit(request))

    @rule(kind=kinds_st, priority=st.integers(0, 10), devices=candidates_st)
    def try_admit_now(self, kind: Kind, priority: int, devices: list[str]) -> None:
        request = self.new_request(kind, priority, devices, None)
        admission = self.arbiter.try_admit_now(request)
        # Without a gate nobody waits where a slot is free, so "nobody more urgent
        # waits for it" holds for every free slot: the first free candidate wins.
        free = [d for d in devices if self.has_free_slot(d, kind)]
        if not free:
            assert admission is None
        else:
            assert admission == Admission(request.job_id, free[0], kind)
            self.running[request.job_id] = admission

    @precondition(lambda self: self.running)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        job_id = data.draw(st.sampled_from(sorted(self.running)))
        del self.running[job_id]
        self.done.add(job_id)
        self.accept(self.arbiter.release(job_id))

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        known = sorted(self.waiting) + sorted(self.running) + sorted(self.done) + ["stranger"]
        job_id = data.draw(st.sampled_from(known))
        assert self.arbiter.cancel(job_id) is (job_id in self.waiting)
        if job_id in self.waiting:
            del self.waiting[job_id]
            self.done.add(job_id)

    @rule(
        device=st.sampled_from(DEVICES),
        training=st.none() | st.integers(0, 3),
        inference=st.none() | st.integers(0, 3),
    )
    def set_limits(self, device: str, training: int | None, inference: int | None) -> None:
        old = self.limits[device]
        self.limits[device] = Limits(
            old.training if training is None else training,
            old.inference if inference is None else inference,
        )
        self.accept(self.arbiter.set_limits(device, training=training, inference=inference))

    @rule(seconds=seconds_st)
    def time_passes(self, seconds: int) -> None:
        self.clock.now += seconds
        assert self.arbiter.tick() == []  # without a gate, aging reorders but never admits

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def nothing_lost_or_doubled(self) -> None:
        if not self.limits:
            return
        assert dict(self.arbiter.running()) == self.running
        stats = self.arbiter.statistics()
        assert stats.total_waiting == len(self.waiting)
        assert stats.total_running == len(self.running)
        for pool in stats.pools:
            assert pool.limit == self.limits[pool.device].of(pool.kind)
            assert pool.running == self.in_use(pool.device, pool.kind)
            key = (pool.device, pool.kind)
            assert pool.waiting == sum(1 for w in self.waiting.values() if key in w.pools())
        for job_id in self.done:
            assert self.arbiter.waiting_info(job_id) is None
            assert job_id not in self.running

    @invariant()
    def no_job_waits_while_its_slot_is_free(self) -> None:
        for waiter in self.waiting.values():
            for device in waiter.request.devices:
                assert not self.has_free_slot(device, waiter.request.kind), (
                    f"{waiter.request.job_id} waits but {device} has a free slot"
                )

    @invariant()
    def positions_follow_the_order(self) -> None:
        now = self.clock.now
        infos = self.arbiter.waiting_infos() if self.limits else {}
        assert set(infos) == set(self.waiting)
        for job_id, waiter in self.waiting.items():
            mine = waiter.key(now)
            ahead = sum(
                1
                for other in self.waiting.values()
                if other.key(now) < mine and other.pools() & waiter.pools()
            )
            info = self.arbiter.waiting_info(job_id)
            assert info is not None and info == infos[job_id]
            assert (info.position, info.effective_priority) == (ahead + 1, mine[0])
            assert info.reason


TestArbiterInvariants = ArbiterMachine.TestCase
TestArbiterInvariants.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None, derandomize=True
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    jobs=st.lists(
        st.tuples(st.integers(0, 10), seconds_st | st.integers(0, 1200), candidates_st),
        min_size=1,
        max_size=30,
    ),
    elapsed=seconds_st,
)
def test_slots_are_handed_out_in_effective_priority_then_submit_order(
    jobs: list[tuple[int, int, list[str]]], elapsed: int
) -> None:
    """Jobs of any age queue behind paused pools; opening one slot at a time on each
    device must hand them out exactly in (effective priority, submit time, arrival) order."""
    clock = Clock()
    arbiter = Arbiter({d: Limits(0, 0) for d in DEVICES}, aging_interval_s=INTERVAL, clock=clock)
    waiting: dict[str, Waiting] = {}
    for seq, (priority, age, devices) in enumerate(jobs):
        request = Request(f"j{seq}", Kind.TRAINING, priority, tuple(devices), clock.now - age)
        assert arbiter.submit(request) == []
        waiting[request.job_id] = Waiting(request, clock.now - age, seq)
    clock.now += elapsed
    for device in DEVICES:
        admissions = arbiter.set_limits(device, training=1)
        while admissions:
            (admission,) = admissions
            line = [w for w in waiting.values() if device in w.request.devices]
            assert admission.job_id == min(line, key=lambda w: w.key(clock.now)).request.job_id
            del waiting[admission.job_id]
            admissions = arbiter.release(admission.job_id)
    assert not waiting
