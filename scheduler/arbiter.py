"""The device arbiter: admits jobs into per-(device, kind) slot pools by priority.

Contract, in the manner of a semaphore with a priority queue in front:

- `submit` enqueues a job and returns the admissions that follow (perhaps its own);
  `try_admit_now` is its non-blocking twin, which admits only if that needs no wait
  and never enqueues.
- `release` gives a running job's slot back; `cancel` takes a waiting job out of line.
- `set_limits`, `add_device`, `remove_device` change the pools at run time.
- `tick` re-evaluates (aging may have changed who is first, a gate may now say yes).
- `plan_preemptions` chooses running training jobs to ask to yield for more urgent
  waiting ones, and reserves the room they free; it admits nothing itself. The
  caller stops the victims, then calls `release` for each as for any job that ended.

Every method that can admit returns the admissions it made, in the order made; the
caller starts those jobs. Nothing is admitted behind the caller's back.

Rules: lower priority number first, equal priority in submit order, aged by one step
per `aging_interval_s` waited. A free slot goes to the most urgent waiting job that can
use it (no barging). A job that accepts several devices takes the first one listed
that has a free slot. A job that cannot run only holds back its own pools: a less
urgent job for another (device, kind) pool still starts. Shrinking a limit never
evicts; it only holds admissions until the pool is under the new limit.

Preemption: a waiting job at the head of a pool may ask running jobs on one of its
devices to yield if they are preemptible training jobs, have run `min_runtime_s`, and
were admitted at least `margin` steps less urgent than it is now; it asks the fewest
that make room (slots of its kind, and memory per the gate), once. The pool it waits
for is then reserved: its free slots go to that job alone, even past a job that has
since become more urgent (a victim requeued with its old submit time), so the job that
preempted is the one that starts. The reservation ends when the job starts, is
cancelled or loses the device.

How "most urgent" stays cheap with aging is explained in `scheduler._pool`.

Not thread-safe, by design: the server calls it from its event loop, one call at a time.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

from scheduler import _explain
from scheduler._pool import Key, Pool, Waiter, effective_priority
from scheduler._preempt import Reservation, RunningJob, fewest_victims, victim_order
from scheduler.types import (
    Admission,
    AdmissionGate,
    ArbiterStatistics,
    Kind,
    Limits,
    PoolStatistics,
    PreemptionPlan,
    QueueFull,
    Request,
    WaitingInfo,
    check_priority,
)

__all__ = ["Arbiter"]

logger = logging.getLogger(__name__)


class Arbiter:
    """Priority admission of jobs into per-device, per-kind concurrency slots."""

    def __init__(
        self,
        limits: Mapping[str, Limits],
        *,
        max_waiting: int = 10_000,
        aging_interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        gate: AdmissionGate | None = None,
    ) -> None:
        """Create pools for `limits` (device name -> Limits).

        `aging_interval_s` may be `math.inf` to turn aging off. `gate` adds a condition
        beyond free slots (memory, later); None admits whenever a slot is free.
        Raises ValueError for a bad `max_waiting` or `aging_interval_s`.
        """
        if max_waiting < 0:
            raise ValueError(f"max_waiting must be 0 or more, not {max_waiting}")
        if not aging_interval_s > 0:
            raise ValueError(f"aging_interval_s must be positive, not {aging_interval_s}")
        self._max_waiting = max_waiting
        self._interval = float(aging_interval_s)
        self._clock = clock
        self._gate = gate
        self._limits: dict[str, Limits] = {}
        self._pools: dict[tuple[str, Kind], Pool] = {}
        self._waiting: dict[str, Waiter] = {}
        self._running: dict[str, RunningJob] = {}
        # Pools promised to a waiter whose preemption plan is making room in them. Empty
        # almost always: hot paths test it before looking anything up.
        self._reservations: dict[Pool, Reservation] = {}
        self._seq = itertools.count()
        for device, device_limits in limits.items():
            self.add_device(device, device_limits)

    # -- the admission contract ------------------------------------------------------

    def submit(self, request: Request, *, returning: bool = False) -> list[Admission]:
        """Queue `request`; return the admissions made now (it may be one of them).

        `returning`: a job accepted earlier coming back to the line (a preempted one): a
        full line never refuses it, since refusing would lose accepted work.
        Raises ValueError for an unknown or repeated device, a bad priority or a job id
        already waiting or running; QueueFull if `max_waiting` jobs wait and this one
        cannot start at once (and is not `returning`). On error nothing changes.
        """
        self._check_new(request)
        if len(self._waiting) >= self._max_waiting and not returning:
            admission = self.try_admit_now(request)
            if admission is None:
                raise QueueFull(
                    f"{len(self._waiting)} tasks are already waiting (the limit is "
                    f"{self._max_waiting}); try again when some have started"
                )
            return [admission]
        submit_time = self._clock() if request.submit_time is None else request.submit_time
        waiter = Waiter(request, submit_time, next(self._seq))
        for device in request.devices:
            pool = self._pools[(device, request.kind)]
            waiter.pools.append(pool)
            pool.push(waiter)
        self._waiting[request.job_id] = waiter
        return self._dispatch()

    def try_admit_now(self, request: Request) -> Admission | None:
        """Admit `request` if a candidate slot is free now and nobody more urgent waits.

        Never enqueues: None means "would have to wait" and leaves no trace. Raises
        ValueError like `submit`.
        """
        self._check_new(request)
        now = self._clock()
        submit_time = now if request.submit_time is None else request.submit_time
        # A newcomer is behind every waiter with an equal key prefix, so a fresh seq.
        mine: Key = (
            effective_priority(request.priority, submit_time, now, self._interval),
            submit_time,
            next(self._seq),
        )
        for device in request.devices:
            pool = self._pools[(device, request.kind)]
            if not pool.has_free_slot:
                continue
            if self._reservations and pool in self._reservations:
                continue  # promised to the waiter that preempted for it
            head = pool.head(now, self._interval)
            if head is not None and head[0] < mine:
                continue  # someone more urgent waits for this slot: no barging
            if self._fits(request, device):
                return self._start(request, pool, mine[0], now)
        return None

    def cancel(self, job_id: str) -> bool:
        """Take a waiting job out of line; True if it was waiting.

        Running jobs are not touched (the caller stops them, then calls `release`).
        Never admits: with a gate, a cancelled job may have been holding a free slot
        back, and the next `tick` hands that slot on.
        """
        waiter = self._waiting.pop(job_id, None)
        if waiter is None:
            return False
        self._retire(waiter)
        return True

    def release(self, job_id: str) -> list[Admission]:
        """A running job ended: free its slot and return the admissions that follow.

        Raises KeyError if `job_id` is not running (never admitted, or released already).
        """
        job = self._running.pop(job_id, None)
        if job is None:
            raise KeyError(f"job {job_id!r} is not running")
        admission = job.admission
        self._pools[(admission.device, admission.kind)].running -= 1
        if self._gate is not None:
            self._gate.released(admission)
        admissions = self._dispatch()
        if self._reservations and job.yielding:
            self._drop_spent_reservations()
        return admissions

    def tick(self) -> list[Admission]:
        """Re-evaluate now; cheap when no pool has both a free slot and a waiter.

        Needed only where something outside the arbiter changed: a gate's view of
        memory, or aging reordering jobs that a gate holds back. Without a gate a free
        slot never has a waiter, so this returns [].
        """
        return self._dispatch()

    # -- preemption --------------------------------------------------------------------

    def plan_preemptions(self, *, margin: int, min_runtime_s: float) -> list[PreemptionPlan]:
        """Choose running jobs to yield for the most urgent waiting job of each pool.

        Victims are preemptible training jobs on one of the waiter's devices, running
        for at least `min_runtime_s`, admitted at an effective priority at least
        `margin` above the waiter's (less urgent). The fewest that make room are chosen,
        on the first of the waiter's devices where some do; they are marked yielding
        and the pool is reserved for the waiter (see the module docstring). A waiter is
        planned for once while its victims yield. Plans come in the waiters' urgency
        order. Admits nothing: call `tick` first. Raises ValueError for a negative
        `margin` or `min_runtime_s`.
        """
        if margin < 0:
            raise ValueError(f"margin must be 0 or more, not {margin}")
        if not min_runtime_s >= 0:
            raise ValueError(f"min_runtime_s must be 0 or more, not {min_runtime_s}")
        if not self._waiting or not self._running:
            return []
        now = self._clock()
        heads: dict[str, tuple[Key, Waiter]] = {}
        for pool in self._pools.values():
            head = self._head(pool, now)
            if head is not None:
                heads.setdefault(head[1].request.job_id, head)
        plans: list[PreemptionPlan] = []
        for key, waiter in sorted(heads.values(), key=lambda head: head[0]):
            if self._making_room_for(waiter):
                continue
            plan = self._plan(waiter, key[0] + margin, now - min_runtime_s)
            if plan is not None:
                plans.append(plan)
        return plans

    def yielding(self) -> frozenset[str]:
        """Running jobs asked to yield by a plan, until they are released."""
        return frozenset(job_id for job_id, job in self._running.items() if job.yielding)

    # -- run-time changes --------------------------------------------------------------

    def set_limits(
        self, device: str, *, training: int | None = None, inference: int | None = None
    ) -> list[Admission]:
        """Change a device's limits; None keeps one as it is. Returns admissions made.

        Growing admits waiting jobs at once. Shrinking never evicts: running jobs carry
        on, and admissions wait until the pool is under the new limit. Raises KeyError
        for an unknown device, ValueError for a negative limit (TypeError: not an int).
        """
        current = self._device_limits(device)
        new = Limits(
            training=current.training if training is None else training,
            inference=current.inference if inference is None else inference,
        )
        self._limits[device] = new
        for kind in Kind:
            self._pools[(device, kind)].limit = new.of(kind)
        return self._dispatch()

    def add_device(self, device: str, limits: Limits) -> None:
        """Add a device with its own pools (a GPU or a remote node that came up).

        Raises ValueError if the name is empty or the device is already known.
        """
        if not device:
            raise ValueError("a device name must not be empty")
        if device in self._limits:
            raise ValueError(f"device {device!r} is already known")
        self._limits[device] = limits
        for kind in Kind:
            self._pools[(device, kind)] = Pool(device, kind, limits.of(kind))

    def remove_device(self, device: str) -> list[str]:
        """Remove a device and its pools; return ids of waiting jobs dropped with it.

        A waiting job that accepts other devices loses this candidate (and a
        reservation it held here) and keeps its place; one that accepted only this
        device leaves the line, and the caller fails it. Raises KeyError for an unknown
        device, ValueError while jobs still run on it (release them first).
        """
        self._device_limits(device)
        busy = sorted(j for j, job in self._running.items() if job.admission.device == device)
        if busy:
            raise ValueError(
                f"{device} still runs {len(busy)} job(s) ({', '.join(busy)}); release them first"
            )
        dropped: list[str] = []
        for kind in Kind:
            pool = self._pools.pop((device, kind))
            self._reservations.pop(pool, None)  # its holder loses the device, not its place
            for waiter in pool.waiters():
                waiter.pools.remove(pool)
                if not waiter.pools:
                    dropped.append(waiter.request.job_id)
                    del self._waiting[waiter.request.job_id]
                    waiter.alive = False
        del self._limits[device]
        return dropped

    # -- reading -----------------------------------------------------------------------

    @property
    def devices(self) -> tuple[str, ...]:
        """Known devices, in the order they were added."""
        return tuple(self._limits)

    def clock(self) -> float:
        """The arbiter's clock now: `Request.submit_time` and run times are read on it."""
        return self._clock()

    def limits(self, device: str) -> Limits:
        """Current limits of one device; KeyError if unknown."""
        return self._device_limits(device)

    def running(self) -> Mapping[str, Admission]:
        """A read-only copy: job id -> its admission, for every running job."""
        return MappingProxyType({job_id: job.admission for job_id, job in self._running.items()})

    def statistics(self) -> ArbiterStatistics:
        """A frozen snapshot of every pool and of the totals."""
        return ArbiterStatistics(
            pools=tuple(
                PoolStatistics(pool.device, pool.kind, pool.limit, pool.running, pool.live)
                for pool in self._pools.values()
            ),
            total_waiting=len(self._waiting),
            total_running=len(self._running),
        )

    def most_urgent_waiting(self, device: str, kind: Kind) -> int | None:
        """The effective priority of the most urgent job waiting for the (device, kind)
        pool, or None if none waits: lets a holder of a slot that could give it back
        (an idle served model) decide whether someone more urgent needs it."""
        pool = self._pools.get((device, kind))
        head = pool.head(self._clock(), self._interval) if pool is not None else None
        return None if head is None else head[0][0]

    def waiting_info(self, job_id: str) -> WaitingInfo | None:
        """Where one waiting job stands, or None if it is not waiting.

        O(waiting jobs): fine for one task; a listing should call `waiting_infos`.
        """
        waiter = self._waiting.get(job_id)
        if waiter is None:
            return None
        now = self._clock()
        interval = self._interval
        mine = waiter.key(now, interval)
        pools = set(waiter.pools)
        ahead = sum(
            1
            for other in self._waiting.values()
            if other.key(now, interval) < mine and not pools.isdisjoint(other.pools)
        )
        return self._info(waiter, mine, ahead, now, {})

    def waiting_infos(self) -> Mapping[str, WaitingInfo]:
        """`waiting_info` for every waiting job at once, in O(n log n): for listings."""
        now = self._clock()
        interval = self._interval
        keyed = sorted((waiter.key(now, interval), waiter) for waiter in self._waiting.values())
        # Jobs with the same candidate pools form a group; there are only a few groups
        # (cpu, each GPU, "any GPU"...), so counting per group keeps this near-linear.
        seen: dict[frozenset[Pool], int] = {}
        overlapping: dict[frozenset[Pool], list[frozenset[Pool]]] = {}
        busy_texts: dict[tuple[Pool, ...], str] = {}
        infos: dict[str, WaitingInfo] = {}
        for key, waiter in keyed:
            group = frozenset(waiter.pools)
            if group not in overlapping:
                overlapping[group] = [group]
                for other in seen:
                    if not group.isdisjoint(other):
                        overlapping[group].append(other)
                        overlapping[other].append(group)
                seen[group] = 0
            ahead = sum(seen[other] for other in overlapping[group])
            infos[waiter.request.job_id] = self._info(waiter, key, ahead, now, busy_texts)
            seen[group] += 1
        return MappingProxyType(infos)

    # -- internals -----------------------------------------------------------------------

    def _check_new(self, request: Request) -> None:
        job_id = request.job_id
        if not isinstance(job_id, str) or not job_id:
            raise ValueError(f"job_id must be a non-empty string, not {job_id!r}")
        if job_id in self._waiting or job_id in self._running:
            state = "waiting" if job_id in self._waiting else "running"
            raise ValueError(f"job {job_id!r} is already {state}")
        if not isinstance(request.kind, Kind):
            raise ValueError(f"kind must be a Kind, not {request.kind!r}")
        check_priority(request.priority)
        if not request.devices:
            raise ValueError(f"job {job_id!r} names no device")
        if len(set(request.devices)) != len(request.devices):
            raise ValueError(f"job {job_id!r} lists a device twice: {request.devices}")
        for device in request.devices:
            if device not in self._limits:
                raise ValueError(
                    f"unknown device {device!r}; known devices: {', '.join(self._limits)}"
                )
        if request.submit_time is not None and not math.isfinite(request.submit_time):
            raise ValueError(f"submit_time must be a finite number, not {request.submit_time}")
        if request.memory_bytes < 0:
            raise ValueError(f"memory_bytes must be 0 or more, not {request.memory_bytes}")

    def _device_limits(self, device: str) -> Limits:
        try:
            return self._limits[device]
        except KeyError:
            known = ", ".join(self._limits) or "none"
            raise KeyError(f"unknown device {device!r}; known devices: {known}") from None

    def _dispatch(self) -> list[Admission]:
        """Admit while some pool has a free slot and a waiter who may take it.

        Each round takes the most urgent head among open pools, so admissions come
        out in global urgency order. The head is tried on its candidates in its own
        order; since it is at least as urgent as the head of every open pool it is in,
        taking any of them is no barging. A head that fits nowhere closes all its open
        pools for this pass: their slots stay free for it (strict priority, no backfill).
        A reserved pool's head is its holder, and nobody else may take it.
        """
        pools = [p for p in self._pools.values() if p.live and p.running < p.limit]
        if not pools:
            return []  # the common case: every pool with waiters is full
        now = self._clock()
        admitted: list[Admission] = []
        while pools:
            best_key: Key | None = None
            best: Waiter | None = None
            for pool in pools:
                head = self._head(pool, now)
                if head is not None and (best_key is None or head[0] < best_key):
                    best_key, best = head
            if best_key is None or best is None:
                break
            target: Pool | None = None
            candidates = self._ranked(best, pools)
            for pool in candidates:
                if self._fits(best.request, pool.device):
                    target = pool
                    break
            if target is None:
                # Close what it may take; the pools reserved for others stay open for
                # their holders. (It heads at least one of its candidates, so this
                # always closes something.)
                pools = [p for p in pools if p not in candidates]
                continue
            del self._waiting[best.request.job_id]
            self._retire(best)
            admitted.append(self._start(best.request, target, best_key[0], now))
            pools = [p for p in pools if p.live and p.running < p.limit]
        return admitted

    def _ranked(self, waiter: Waiter, open_pools: list[Pool]) -> list[Pool]:
        """The waiter's open candidate pools in the order to try: its own order, or the
        gate's (most free memory first, say) when there is a gate and a choice. Pools
        reserved for another waiter are not its candidates."""
        candidates = [pool for pool in waiter.pools if pool in open_pools]
        if self._reservations:
            candidates = [pool for pool in candidates if self._may_take(waiter, pool)]
        if self._gate is None or len(candidates) < 2:
            return candidates
        by_device = {pool.device: pool for pool in candidates}
        try:
            order = self._gate.rank(waiter.request, list(by_device))
            ranked = [by_device[d] for d in order if d in by_device]
        except Exception:
            logger.exception("admission gate failed to rank devices for %r", waiter.request.job_id)
            return candidates
        # A gate that drops a device must not lose it: keep the rest in the job's order.
        return ranked + [pool for pool in candidates if pool not in ranked]

    def _fits(self, request: Request, device: str) -> bool:
        if self._gate is None:
            return True
        try:
            return bool(self._gate.fits(request, device))
        except Exception:
            logger.exception("admission gate failed for job %r on %s", request.job_id, device)
            return False

    def _refusal(self, request: Request, device: str) -> str:
        """The gate's sentence for why `request` does not fit on `device`."""
        assert self._gate is not None  # only asked about devices the gate refused
        try:
            return self._gate.explain(request, device)
        except Exception:
            logger.exception("admission gate failed to explain %r on %s", request.job_id, device)
            return f"not enough room on {device} for this task yet"

    def _start(self, request: Request, pool: Pool, urgency: int, now: float) -> Admission:
        pool.running += 1
        admission = Admission(request.job_id, pool.device, request.kind)
        self._running[request.job_id] = RunningJob(admission, request, now, urgency)
        if self._gate is not None:
            self._gate.admitted(request, pool.device)
        return admission

    def _retire(self, waiter: Waiter) -> None:
        """`waiter` left the line (admitted or cancelled): so did any reservation it held."""
        waiter.alive = False
        for pool in waiter.pools:
            pool.forget(waiter)
        if self._reservations:
            self._unreserve(waiter)

    # -- preemption internals ------------------------------------------------------------

    def _head(self, pool: Pool, now: float) -> tuple[Key, Waiter] | None:
        """Who `pool`'s next free slot goes to: its holder if reserved, else its head."""
        reservation = self._reservations.get(pool) if self._reservations else None
        if reservation is None:
            return pool.head(now, self._interval)
        holder = reservation.waiter
        return holder.key(now, self._interval), holder

    def _may_take(self, waiter: Waiter, pool: Pool) -> bool:
        reservation = self._reservations.get(pool)
        return reservation is None or reservation.waiter is waiter

    def _reservation_of(self, waiter: Waiter) -> Reservation | None:
        for reservation in self._reservations.values():
            if reservation.waiter is waiter:
                return reservation
        return None

    def _still_yielding(self, plan: PreemptionPlan) -> list[str]:
        return [job_id for job_id in plan.victims if job_id in self._running]

    def _making_room_for(self, waiter: Waiter) -> bool:
        """True while a plan for `waiter` waits on its victims: a reservation lasts only
        that long (`_drop_spent_reservations`), so once all have yielded and it still
        cannot start (the memory it counted on went elsewhere), it may plan again."""
        return bool(self._reservations) and self._reservation_of(waiter) is not None

    def _plan(self, waiter: Waiter, at_least: int, started_by: float) -> PreemptionPlan | None:
        """Victims for `waiter` on the first of its devices where some make room: running
        jobs admitted at urgency `at_least` or less urgent, no later than `started_by`."""
        request = waiter.request
        # Its pools, not `request.devices`: a device removed since it queued is gone.
        for pool in waiter.pools:
            device = pool.device
            if pool.limit == 0 or not self._may_take(waiter, pool):
                continue
            need = max(0, pool.running - pool.limit + 1)
            if need and request.kind is Kind.INFERENCE:
                continue  # only training jobs yield: they cannot free an inference slot
            if not need and (self._gate is None or self._fits(request, device)):
                continue  # nothing stands in its way here: the next pass admits it
            victims = self._fewest_victims(request, device, need, at_least, started_by)
            if victims is not None:
                return self._reserve(waiter, pool, victims)
        return None

    def _fewest_victims(
        self, request: Request, device: str, need: int, at_least: int, started_by: float
    ) -> tuple[RunningJob, ...] | None:
        """The fewest candidates on `device` whose leaving frees `need` slots of
        `request`'s kind and, per the gate, enough memory; None if no set does."""

        def works(victims: Sequence[RunningJob]) -> bool:
            if len(victims) < need:
                return False
            return self._fits_after(request, device, [v.admission for v in victims])

        candidates = self._candidates(device, at_least, started_by)
        return fewest_victims(candidates, works, smallest=need)

    def _candidates(self, device: str, at_least: int, started_by: float) -> list[RunningJob]:
        """Jobs on `device` that may be asked to yield, in the order to ask them."""
        candidates = [
            job
            for job in reversed(self._running.values())  # newest first: see victim_order
            if job.admission.device == device
            and job.admission.kind is Kind.TRAINING
            and job.request.preemptible
            and not job.yielding
            and job.started <= started_by
            and job.urgency >= at_least
        ]
        candidates.sort(key=victim_order)
        return candidates

    def _reserve(self, waiter: Waiter, pool: Pool, victims: Sequence[RunningJob]) -> PreemptionPlan:
        plan = PreemptionPlan(
            waiter.request.job_id, pool.device, tuple(v.admission.job_id for v in victims)
        )
        for victim in victims:
            victim.yielding = True
        self._reservations[pool] = Reservation(waiter, plan)
        return plan

    def _drop_spent_reservations(self) -> None:
        """Ends the reservations whose victims have all left. The release of the last one
        was dispatched with the reservation in place, so its holder had the first claim
        on the freed room; one that could not take it (the memory it counted on went
        elsewhere) now waits as any other, and may plan again, rather than holding a
        free slot from everyone."""
        spent = [p for p, r in self._reservations.items() if not self._still_yielding(r.plan)]
        for pool in spent:
            del self._reservations[pool]

    def _unreserve(self, waiter: Waiter) -> None:
        for pool in [p for p, r in self._reservations.items() if r.waiter is waiter]:
            del self._reservations[pool]

    def _fits_after(self, request: Request, device: str, released: list[Admission]) -> bool:
        if self._gate is None:
            return True
        try:
            return bool(self._gate.fits_after(request, device, released))
        except Exception:
            logger.exception("admission gate failed for job %r on %s", request.job_id, device)
            return False

    def _info(
        self,
        waiter: Waiter,
        key: Key,
        ahead: int,
        now: float,
        busy_texts: dict[tuple[Pool, ...], str],
    ) -> WaitingInfo:
        request = waiter.request
        return WaitingInfo(
            job_id=request.job_id,
            position=ahead + 1,
            priority=request.priority,
            effective_priority=key[0],
            waited_s=max(0.0, now - waiter.submit_time),
            reason=self._reason(waiter, ahead, busy_texts),
        )

    def _reason(self, waiter: Waiter, ahead: int, busy_texts: dict[tuple[Pool, ...], str]) -> str:
        # `busy_texts` caches the "all slots busy" half of the reason per candidate list
        # (a list, not a set: the sentence names devices in the job's order).
        reservation = self._reservation_of(waiter) if self._reservations else None
        if reservation is not None:  # its victims are yielding (it ends when they have)
            victims = self._still_yielding(reservation.plan)
            return _explain.preempting(victims, reservation.plan.device)
        pools = waiter.pools
        if _explain.all_busy(pools):
            candidates = tuple(pools)
            slots_text = busy_texts.get(candidates)
            if slots_text is None:
                slots_text = busy_texts[candidates] = _explain.busy(pools)
        elif ahead:
            slots_text = ""  # a free slot held for someone ahead: "N ahead" says it all
        else:
            not_fitting = [p.device for p in pools if p.has_free_slot]
            not_fitting = [d for d in not_fitting if not self._fits(waiter.request, d)]
            slots_text = _explain.slots(
                pools, [self._refusal(waiter.request, d) for d in not_fitting]
            )
        return _explain.reason(ahead, slots_text)
