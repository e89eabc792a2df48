"""The dispatcher: the arbiter's only caller, and one waiting future per admission.

Every job that needs a slot, a task or a served model alike, is `queue`d and gets a
future that resolves with its `Admission` (or fails with `DeviceGone` when the only
devices it could use leave). Whoever holds it starts the job and later `release`s the
slot; a `start` given to `queue` is called in the same instant as the admission, so
no other event (a cancel, a node leaving) can fall between the two. Cancelling the
future withdraws the job: a waiting one leaves the line, and one admitted meanwhile
gives its slot back at once, so an abandoned wait never holds a slot.

A device that leaves while jobs still hold its slots is held (nothing new starts
there) and removed when the last of them is released.

The dispatcher also runs the tick: a periodic pass of the arbiter (aging changes who
is first even when nothing starts or ends) followed by the housekeeping it was given.
Each pass, and each queued job, wakes those waiting in `next_pass` (served models
check there whether a more urgent task needs their slot).

Everything runs on the event loop thread; the arbiter is not thread-safe by design.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from scheduler import Admission, Arbiter, Limits, Request

log = logging.getLogger(__name__)


class DeviceGone(Exception):
    """Every device a waiting job could run on has left; the message says why."""


@dataclass(frozen=True, eq=False)
class _Waiter:
    future: asyncio.Future[Admission]
    start: Callable[[Admission], None] | None


class Dispatcher:
    """Owns the arbiter: queues jobs, resolves their admissions, runs the tick."""

    def __init__(
        self,
        arbiter: Arbiter,
        *,
        tick_interval_s: float,
        housekeeping: Sequence[Callable[[], None]] = (),
    ) -> None:
        self._arbiter = arbiter
        self._tick_interval_s = tick_interval_s
        self._housekeeping = tuple(housekeeping)
        self._waiters: dict[str, _Waiter] = {}
        # Devices that left while jobs ran there, with why: removed at their last release.
        self._leaving: dict[str, str] = {}
        # Admissions not yet handed over, and whether `_hand_over` is draining them: a
        # slot given back while handing over admits the next job, and so on; that chain
        # is a loop over this queue, not a recursion, so it cannot overflow the stack.
        self._admissions: collections.deque[Admission] = collections.deque()
        self._handing_over = False
        self._pass = asyncio.Event()
        self._ticker: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def arbiter(self) -> Arbiter:
        """For reading (devices, limits, statistics, waiting info); changes go through
        the dispatcher so that no admission is lost."""
        return self._arbiter

    async def start(self) -> None:
        self._ticker = asyncio.create_task(self._tick_forever())

    async def close(self) -> None:
        """Stops the tick and hands over nothing more (futures stay unresolved)."""
        self._closed = True
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker

    # -- admission -------------------------------------------------------------------

    def queue(
        self,
        request: Request,
        *,
        start: Callable[[Admission], None] | None = None,
        returning: bool = False,
    ) -> asyncio.Future[Admission]:
        """Queues `request`; its future resolves when it is admitted, and `start` (if
        given) is called with the admission at that instant. `returning`: an accepted
        job coming back (`Arbiter.submit`). Raises what `Arbiter.submit` raises
        (QueueFull, ValueError), leaving nothing behind."""
        if request.job_id in self._waiters:
            raise ValueError(f"job {request.job_id!r} is already waiting")
        future: asyncio.Future[Admission] = asyncio.get_running_loop().create_future()
        waiter = _Waiter(future, start)
        self._waiters[request.job_id] = waiter
        try:
            admissions = self._arbiter.submit(request, returning=returning)
        except BaseException:
            del self._waiters[request.job_id]
            raise
        future.add_done_callback(lambda _: self._cancelled(request.job_id, waiter))
        self._hand_over(admissions)
        self._passed()
        return future

    async def admit(self, request: Request) -> Admission:
        """Queues `request` and waits for its admission. If the wait is cancelled the
        job is withdrawn, even when it was admitted in the same instant."""
        future = self.queue(request)
        try:
            return await future
        except BaseException:
            if future.done() and not future.cancelled() and future.exception() is None:
                self.release(request.job_id)  # admitted, but nobody is left to use it
            raise

    def release(self, job_id: str) -> None:
        """Gives back the slot of an admitted job; nothing if it holds none."""
        self._hand_over(self._release(job_id))

    def withdraw(self, job_id: str) -> None:
        """Takes a job out: out of line if waiting, its slot back if admitted."""
        waiter = self._waiters.pop(job_id, None)
        if waiter is not None:
            waiter.future.cancel()
        self._arbiter.cancel(job_id)
        self.release(job_id)

    # -- devices -----------------------------------------------------------------------

    @property
    def devices(self) -> tuple[str, ...]:
        """The devices jobs may ask for: the arbiter's, less those that are leaving."""
        return tuple(d for d in self._arbiter.devices if d not in self._leaving)

    def set_limits(self, device: str, *, training: int | None, inference: int | None) -> None:
        """Changes a device's limits; a leaving device stays at 0 until it is gone."""
        if device in self._leaving:
            training = inference = 0
        self._hand_over(self._arbiter.set_limits(device, training=training, inference=inference))

    def add_devices(self, devices: Iterable[tuple[str, Limits]]) -> None:
        """New devices (or leaving ones that are back); waiting jobs that may use them
        are admitted at once."""
        for device, limits in devices:
            if device not in self._arbiter.devices:
                self._arbiter.add_device(device, limits)
            elif self._leaving.pop(device, None) is not None:
                self._arbiter.set_limits(
                    device, training=limits.training, inference=limits.inference
                )
        self._hand_over(self._arbiter.tick())

    def remove_device(self, device: str, why: str) -> None:
        """Forgets `device`. A waiting job that could run only there is dropped: its
        future fails with `DeviceGone(why)`. While jobs still hold slots there, the
        device is held and removed when the last of them is released. KeyError if
        the device is unknown."""
        if any(a.device == device for a in self._arbiter.running().values()):
            self._arbiter.limits(device)  # KeyError if unknown
            self._leaving[device] = why
            self._hand_over(self._arbiter.set_limits(device, training=0, inference=0))
            return
        self._leaving.pop(device, None)
        for job_id in self._arbiter.remove_device(device):
            waiter = self._waiters.pop(job_id, None)
            if waiter is not None and not waiter.future.done():
                waiter.future.set_exception(DeviceGone(why))

    # -- passes ------------------------------------------------------------------------

    async def next_pass(self) -> None:
        """Returns after the next pass of the arbiter (a tick or a queued job)."""
        await self._pass.wait()

    def _passed(self) -> None:
        self._pass.set()
        self._pass = asyncio.Event()

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self._tick_interval_s)
            self._hand_over(self._arbiter.tick())
            for duty in self._housekeeping:
                try:
                    duty()
                except Exception:  # one failing duty must not stop admissions
                    log.exception("housekeeping failed")
            self._passed()

    # -- internals ---------------------------------------------------------------------

    def _hand_over(self, admissions: Sequence[Admission]) -> None:
        self._admissions.extend(admissions)
        if self._handing_over:
            return  # the loop further up the stack takes them
        self._handing_over = True
        try:
            while self._admissions:
                admission = self._admissions.popleft()
                waiter = self._waiters.pop(admission.job_id, None)
                if waiter is None or waiter.future.done() or self._closed:
                    # Withdrawn meanwhile, or unknown: never hold a slot nobody uses.
                    if waiter is None and not self._closed:
                        log.error("admission for unknown job %s", admission.job_id)
                    self._admissions.extend(self._release(admission.job_id))
                    continue
                waiter.future.set_result(admission)
                if waiter.start is not None:
                    try:
                        waiter.start(admission)
                    except Exception:  # a bug in the starter must not stall admissions
                        log.exception("could not start job %s", admission.job_id)
                        self._admissions.extend(self._release(admission.job_id))
        finally:
            self._handing_over = False

    def _release(self, job_id: str) -> list[Admission]:
        """Frees the job's slot (if it holds one); removes a leaving device it emptied."""
        admission = self._arbiter.running().get(job_id)
        if admission is None:
            return []
        admissions = self._arbiter.release(job_id)
        why = self._leaving.get(admission.device)
        if why is not None and not any(
            a.device == admission.device for a in self._arbiter.running().values()
        ):
            self.remove_device(admission.device, why)
        return admissions

    def _cancelled(self, job_id: str, waiter: _Waiter) -> None:
        """A waiter whose future is cancelled before its admission leaves the line (one
        admitted in the meantime gave its slot back in `_hand_over`)."""
        if waiter.future.cancelled() and self._waiters.get(job_id) is waiter:
            del self._waiters[job_id]
            self._arbiter.cancel(job_id)
