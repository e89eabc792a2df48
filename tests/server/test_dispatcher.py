"""The dispatcher over a real arbiter: one future per admission, waiters that clean up
after themselves, devices that leave, and passes that wake those who wait for them."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from scheduler import Admission, Arbiter, Kind, Limits, Request
from server.dispatcher import DeviceGone, Dispatcher


def on_a_loop(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """Runs an async test body on a fresh event loop (the dispatcher needs a running one)."""

    @functools.wraps(test)
    def run() -> None:
        asyncio.run(test())

    return run


def _dispatcher(housekeeping: list[Callable[[], None]] | None = None) -> Dispatcher:
    arbiter = Arbiter({"cpu": Limits(training=1, inference=1)}, max_waiting=100)
    return Dispatcher(arbiter, tick_interval_s=0.01, housekeeping=housekeeping or [])


def _training(job_id: str, priority: int = 5, devices: tuple[str, ...] = ("cpu",)) -> Request:
    return Request(job_id, Kind.TRAINING, priority, devices)


@on_a_loop
async def test_a_free_slot_resolves_the_future_at_once() -> None:
    dispatcher = _dispatcher()
    future = dispatcher.queue(_training("a"))
    assert future.done()
    assert future.result() == Admission("a", "cpu", Kind.TRAINING)


@on_a_loop
async def test_a_released_slot_goes_to_the_most_urgent_waiter() -> None:
    dispatcher = _dispatcher()
    dispatcher.queue(_training("running"))
    later = dispatcher.queue(_training("later", priority=7))
    urgent = dispatcher.queue(_training("urgent", priority=2))
    assert not later.done() and not urgent.done()
    dispatcher.release("running")
    assert urgent.done() and not later.done()
    assert set(dispatcher.arbiter.running()) == {"urgent"}


@on_a_loop
async def test_a_cancelled_waiter_leaves_the_line() -> None:
    dispatcher = _dispatcher()
    dispatcher.queue(_training("running"))
    gone = dispatcher.queue(_training("gone", priority=0))
    next_in_line = dispatcher.queue(_training("next"))
    gone.cancel()
    await asyncio.sleep(0)  # done-callbacks run on the next turn of the loop
    assert dispatcher.arbiter.waiting_info("gone") is None
    dispatcher.release("running")
    assert next_in_line.done()
    assert set(dispatcher.arbiter.running()) == {"next"}


@on_a_loop
async def test_an_abandoned_admit_gives_its_slot_back_even_once_admitted() -> None:
    dispatcher = _dispatcher()
    dispatcher.queue(_training("running"))
    waiting = asyncio.create_task(dispatcher.admit(_training("waiting")))
    await asyncio.sleep(0)
    dispatcher.release("running")  # admits "waiting": its future has a result now
    waiting.cancel()  # ... but its caller gives up before it resumes
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert dispatcher.arbiter.running() == {}
    assert dispatcher.queue(_training("third")).done()  # the slot is free again


@on_a_loop
async def test_withdraw_takes_back_a_slot_or_a_place() -> None:
    dispatcher = _dispatcher()
    dispatcher.queue(_training("running"))
    queued = dispatcher.queue(_training("queued"))
    dispatcher.withdraw("queued")
    assert queued.cancelled()
    dispatcher.withdraw("running")
    assert dispatcher.arbiter.running() == {}
    assert dispatcher.arbiter.statistics().total_waiting == 0


@on_a_loop
async def test_a_device_that_leaves_fails_the_jobs_that_could_run_only_there() -> None:
    arbiter = Arbiter(
        {"cpu": Limits(training=1, inference=1), "node-2/cpu": Limits(training=0, inference=0)},
        max_waiting=10,
    )
    dispatcher = Dispatcher(arbiter, tick_interval_s=0.01)
    dispatcher.queue(_training("running"))
    only_there = dispatcher.queue(_training("only-there", devices=("node-2/cpu",)))
    either = dispatcher.queue(_training("either", devices=("node-2/cpu", "cpu")))
    dispatcher.remove_device("node-2/cpu", "node-2 left the Ray cluster")
    with pytest.raises(DeviceGone, match="node-2 left"):
        only_there.result()
    assert not either.done()
    dispatcher.release("running")
    assert either.result().device == "cpu"


@on_a_loop
async def test_growing_a_limit_admits_waiters_at_once() -> None:
    dispatcher = _dispatcher()
    dispatcher.queue(_training("running"))
    waiting = dispatcher.queue(_training("waiting"))
    dispatcher.set_limits("cpu", training=2, inference=None)
    assert waiting.done()


@on_a_loop
async def test_the_tick_runs_housekeeping_and_wakes_pass_waiters() -> None:
    ran = asyncio.Event()
    dispatcher = _dispatcher(housekeeping=[ran.set])
    await dispatcher.start()
    try:
        await asyncio.wait_for(dispatcher.next_pass(), timeout=10)
        assert ran.is_set()
        # A queued job is a pass too.
        passed = asyncio.create_task(dispatcher.next_pass())
        await asyncio.sleep(0)
        dispatcher.queue(_training("a"))
        await asyncio.wait_for(passed, timeout=10)
    finally:
        await dispatcher.close()


@on_a_loop
async def test_start_is_called_in_the_instant_of_admission_in_order() -> None:
    dispatcher = _dispatcher()
    started: list[str] = []
    dispatcher.queue(_training("running"))
    for job_id, priority in (("b", 5), ("a", 1)):
        dispatcher.queue(_training(job_id, priority), start=lambda a: started.append(a.job_id))
    dispatcher.release("running")
    assert started == ["a"]  # before the loop turns: nothing can fall in between
    dispatcher.release("a")
    assert started == ["a", "b"]


@on_a_loop
async def test_a_device_left_while_busy_is_held_then_removed_at_its_last_release() -> None:
    arbiter = Arbiter(
        {"cpu": Limits(training=1, inference=1), "node-2/cpu": Limits(training=1, inference=1)},
        max_waiting=10,
    )
    dispatcher = Dispatcher(arbiter, tick_interval_s=0.01)
    dispatcher.queue(_training("there", devices=("node-2/cpu",)))
    only_there = dispatcher.queue(_training("only-there", devices=("node-2/cpu",)))
    dispatcher.remove_device("node-2/cpu", "node-2 left the Ray cluster")
    assert "node-2/cpu" in arbiter.devices
    assert arbiter.limits("node-2/cpu") == Limits(training=0, inference=0)  # held
    assert not only_there.done()
    assert dispatcher.devices == ("cpu",)  # nothing new may ask for it
    dispatcher.set_limits("node-2/cpu", training=2, inference=None)  # UpdateLimits "cpu"
    assert arbiter.limits("node-2/cpu") == Limits(training=0, inference=0)  # still held
    dispatcher.release("there")
    assert arbiter.devices == ("cpu",)
    with pytest.raises(DeviceGone, match="node-2 left"):
        only_there.result()


@on_a_loop
async def test_a_job_id_already_waiting_is_refused_and_the_first_keeps_its_place() -> None:
    dispatcher = _dispatcher()
    dispatcher.queue(_training("running"))
    first = dispatcher.queue(_training("twice"))
    with pytest.raises(ValueError, match="already waiting"):
        dispatcher.queue(_training("twice"))
    dispatcher.release("running")
    assert first.result().job_id == "twice"


@on_a_loop
async def test_a_leaving_device_that_comes_back_gets_its_limits_again() -> None:
    arbiter = Arbiter({"node-2/cpu": Limits(training=1, inference=1)}, max_waiting=10)
    dispatcher = Dispatcher(arbiter, tick_interval_s=0.01)
    dispatcher.queue(_training("there", devices=("node-2/cpu",)))
    dispatcher.remove_device("node-2/cpu", "node-2 is leaving")
    dispatcher.add_devices([("node-2/cpu", Limits(training=2, inference=1))])
    assert dispatcher.devices == ("node-2/cpu",)
    assert arbiter.limits("node-2/cpu") == Limits(training=2, inference=1)
    dispatcher.release("there")
    assert arbiter.devices == ("node-2/cpu",)  # no longer leaving: kept
