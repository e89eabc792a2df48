"""The dispatcher: the arbiter's only caller, and one waiting future per admission.

Every job that needs a slot, a task or a served model alike, is `queue`d and gets a
future that resolves with its `Admission` (or fails with `DeviceGone` when the only
devices it could use leave). Whoever awaits it starts the job and later `release`s the
slot. Cancelling the future withdraws the job: a waiting one leaves the line, an
admitted one gives its slot back at once, so an abandoned wait never holds a slot.

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

from scheduler import Admission, Arbiter, Limits, Request

log = logging.getLogger(__name__)


class DeviceGone(Exception):
    """Every device a waiting job could run on has left; the message says why."""


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
        self._waiters: dict[str, asyncio.Future[Admission]] = {}
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

    def queue(self, request: Request) -> asyncio.Future[Admission]:
        """Queues `request`; its future resolves when it is admitted. Raises what
        `Arbiter.submit` raises (QueueFull, ValueError), leaving nothing behind."""
        future: asyncio.Future[Admission] = asyncio.get_running_loop().create_future()
        self._waiters[request.job_id] = future
        try:
            admissions = self._arbiter.submit(request)
        except BaseException:
            del self._waiters[request.job_id]
            raise
        future.add_done_callback(lambda f: self._cancelled(request.job_id, f))
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
        if job_id in self._arbiter.running():
            self._hand_over(self._arbiter.release(job_id))

    def withdraw(self, job_id: str) -> None:
        """Takes a job out: out of line if waiting, its slot back if admitted."""
        future = self._waiters.pop(job_id, None)
        if future is not None and not future.done():
            future.cancel()
        self._arbiter.cancel(job_id)
        self.release(job_id)

    # -- devices -----------------------------------------------------------------------

    def set_limits(self, device: str, *, training: int | None, inference: int | None) -> None:
        self._hand_over(self._arbiter.set_limits(device, training=training, inference=inference))

    def add_devices(self, devices: Iterable[tuple[str, Limits]]) -> None:
        """New devices; waiting jobs that may use them are admitted at once."""
        for device, limits in devices:
            if device not in self._arbiter.devices:
                self._arbiter.add_device(device, limits)
        self._hand_over(self._arbiter.tick())

    def remove_device(self, device: str, why: str) -> None:
        """Forgets `device` (nothing runs there any more). A waiting job that could run
        only there is dropped: its future fails with `DeviceGone(why)`."""
        for job_id in self._arbiter.remove_device(device):
            future = self._waiters.pop(job_id, None)
            if future is not None and not future.done():
                future.set_exception(DeviceGone(why))

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
                future = self._waiters.pop(admission.job_id, None)
                if future is None or future.done() or self._closed:
                    # Withdrawn meanwhile, or unknown: never hold a slot nobody uses.
                    if future is None and not self._closed:
                        log.error("admission for unknown job %s", admission.job_id)
                    if admission.job_id in self._arbiter.running():
                        self._admissions.extend(self._arbiter.release(admission.job_id))
                    continue
                future.set_result(admission)
        finally:
            self._handing_over = False

    def _cancelled(self, job_id: str, future: asyncio.Future[Admission]) -> None:
        """A waiter that is cancelled cleans up after itself."""
        if not future.cancelled():
            return
        self._waiters.pop(job_id, None)
        self._arbiter.cancel(job_id)
        self.release(job_id)
