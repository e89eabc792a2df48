"""One (device, kind) slot pool: its limit, its running count and its waiting line.

The waiting line must answer one question fast, thousands of times a second: who is
the most urgent waiter *now*, with aging? Urgency is the key

    (effective priority, submit_time, seq)
    effective priority = max(0, priority - floor(waited / aging_interval))

which changes with time, so a single heap keyed on it would need re-keying as the
clock moves. Instead the line keeps one heap per base priority (0..10), each ordered
by (submit_time, seq). All waiters age at the same rate, so within one base priority
the oldest waiter has waited longest, hence has the lowest effective priority of its
level, and also the earliest submit: it is at least as urgent as everyone else there.
The most urgent waiter of the pool is therefore the most urgent of at most 11 heads.
A decision costs O(11 + log n) whatever aging did, and nothing is re-keyed on a tick.

A job that accepts several devices waits in several pools at once (one shared
`Waiter`). Admitting or cancelling it marks it dead; each pool drops dead entries
lazily when they reach the top of a heap, and compacts when dead entries pile up.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from scheduler.types import MAX_PRIORITY, MIN_PRIORITY, Kind, Request

# (submit_time, seq, waiter): seq is unique, so the waiter itself is never compared.
_Entry = tuple[float, int, "Waiter"]
# (effective priority, submit_time, seq): smaller is more urgent.
Key = tuple[int, float, int]

# Rebuild a pool's heaps when dead entries outnumber live ones and are at least this many,
# so memory stays O(live) under heavy cancelling without rebuilding on every cancel.
_COMPACT_MIN_DEAD = 1024


def effective_priority(priority: int, submit_time: float, now: float, interval: float) -> int:
    """Priority after aging: one step more urgent per full `interval` waited, floored at 0."""
    waited = now - submit_time
    if waited < interval:  # also a wait "from the future" and an infinite interval
        return priority
    return max(MIN_PRIORITY, priority - int(waited // interval))


@dataclass(eq=False, slots=True)
class Waiter:
    """A waiting job, shared by the heaps of every pool it could run in."""

    request: Request
    submit_time: float
    seq: int
    # Candidate pools in the request's order of preference (one per candidate device).
    pools: list[Pool] = field(default_factory=list)
    alive: bool = True

    def key(self, now: float, interval: float) -> Key:
        """Urgency at `now`: smaller is more urgent."""
        return (
            effective_priority(self.request.priority, self.submit_time, now, interval),
            self.submit_time,
            self.seq,
        )


class Pool:
    """Slots of one kind on one device and the jobs waiting for them."""

    __slots__ = ("dead", "device", "kind", "levels", "limit", "live", "running")

    def __init__(self, device: str, kind: Kind, limit: int) -> None:
        self.device = device
        self.kind = kind
        self.limit = limit
        self.running = 0
        # Live waiters in this pool's heaps, and dead entries not yet dropped.
        self.live = 0
        self.dead = 0
        self.levels: list[list[_Entry]] = [[] for _ in range(MAX_PRIORITY + 1)]

    @property
    def has_free_slot(self) -> bool:
        return self.running < self.limit

    def push(self, waiter: Waiter) -> None:
        heapq.heappush(
            self.levels[waiter.request.priority], (waiter.submit_time, waiter.seq, waiter)
        )
        self.live += 1

    def forget(self, waiter: Waiter) -> None:
        """`waiter` (already marked dead) left the line: its entry here is now garbage."""
        self.live -= 1
        self.dead += 1
        if self.dead >= _COMPACT_MIN_DEAD and self.dead > self.live:
            self._compact()

    def head(self, now: float, interval: float) -> tuple[Key, Waiter] | None:
        """The most urgent live waiter at `now` and its key, or None if nobody waits."""
        if not self.live:
            return None
        # The hot path of every decision: `effective_priority` is inlined and the key
        # tuple built only for the winner (profiling showed the calls dominating).
        best: _Entry | None = None
        best_eff = MAX_PRIORITY + 1
        for priority, heap in enumerate(self.levels):
            if not heap:
                continue
            entry = heap[0]
            if not entry[2].alive:
                while heap and not heap[0][2].alive:
                    heapq.heappop(heap)
                    self.dead -= 1
                if not heap:
                    continue
                entry = heap[0]
            waited = now - entry[0]  # effective_priority(), inlined
            eff = priority - int(waited // interval) if waited >= interval else priority
            if eff < MIN_PRIORITY:
                eff = MIN_PRIORITY
            if eff < best_eff or (eff == best_eff and best is not None and entry < best):
                best_eff, best = eff, entry
        assert best is not None  # live > 0 means some heap holds a live entry
        return (best_eff, best[0], best[1]), best[2]

    def waiters(self) -> list[Waiter]:
        """Every live waiter, in no particular order."""
        return [entry[2] for heap in self.levels for entry in heap if entry[2].alive]

    def _compact(self) -> None:
        for index, heap in enumerate(self.levels):
            kept = [entry for entry in heap if entry[2].alive]
            heapq.heapify(kept)
            self.levels[index] = kept
        self.dead = 0
