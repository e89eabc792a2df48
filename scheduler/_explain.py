"""Why a job waits, in a sentence a person understands.

Shown on a queued task ("2 of 2 cpu training slots busy", "3 more urgent tasks
ahead; 1 of 1 cuda:0 training slots busy"), so it names devices and counts, not
internals. The sentence has two halves: who is ahead (`reason`) and what the job's
slots are doing (`slots`); the second is the same for every job with the same
candidates, so listings compute it once per candidate set. A job that has asked
others to yield says only that (`preempting`): the slot is already promised to it.
"""

from __future__ import annotations

from collections.abc import Sequence

from scheduler._pool import Pool


def reason(ahead: int, slots_text: str) -> str:
    """The whole sentence: `ahead` more urgent waiters, then `slots_text` if any."""
    if not ahead:
        return slots_text
    ahead_text = f"{ahead} more urgent task{'' if ahead == 1 else 's'} ahead"
    return f"{ahead_text}; {slots_text}" if slots_text else ahead_text


def preempting(victims: Sequence[str], device: str) -> str:
    """The whole sentence for a job that asked `victims` on `device` to make room."""
    if len(victims) == 1:
        return (
            f"about to preempt task {victims[0]} on {device}: "
            "it saves a checkpoint and yields its slot"
        )
    return (
        f"about to preempt tasks {', '.join(victims)} on {device}: "
        "they save a checkpoint and yield their slots"
    )


def all_busy(pools: Sequence[Pool]) -> bool:
    """True if none of `pools` can give out a slot now."""
    return not any(pool.has_free_slot for pool in pools)


def slots(pools: Sequence[Pool], refusals: Sequence[str]) -> str:
    """What the candidate `pools` are doing, for a job at the front of their line.

    `refusals` are the admission gate's sentences for the devices whose free slot it
    refused ("needs ~3.1 GB on cuda:0, 1.2 GB free").
    """
    if all_busy(pools):
        return busy(pools)
    if refusals:
        return "; ".join(refusals)
    # Only between a change outside the arbiter (a gate's view) and the next tick.
    free = ", ".join(pool.device for pool in pools if pool.has_free_slot)
    return f"a slot is free on {free}; it is given out at the next pass"


def busy(pools: Sequence[Pool]) -> str:
    """Describe `pools`, all of which are full, paused or over a lowered limit."""
    if len(pools) == 1:
        pool = pools[0]
        what = f"{pool.device} {pool.kind.value}"
        if pool.limit == 0:
            return f"{what} is paused (limit 0)"
        if pool.running > pool.limit:
            return f"{pool.running} {what} tasks running, over the lowered limit of {pool.limit}"
        return f"{pool.running} of {pool.limit} {what} slots busy"
    details = ", ".join(f"{pool.device} ({_short(pool)})" for pool in pools)
    return f"all {pools[0].kind.value} slots busy on {details}"


def _short(pool: Pool) -> str:
    if pool.limit == 0:
        return "paused"
    if pool.running > pool.limit:
        return f"{pool.running} running, limit {pool.limit}"
    return f"{pool.running} of {pool.limit}"
