"""Where a served model's forward passes run: one wide lane, or narrow lanes.

Why lanes, and not a pool of threads that each take what is free: GNU OpenMP (torch's
CPU threading) lets its threads spin between parallel regions only while the process
holds no more OpenMP threads than it has CPUs; past that every thread sleeps on a futex
after each region and must be woken for the next, which a forward pass of hundreds of
small regions pays for on every layer. A thread's OpenMP helpers live as long as the
thread, idle or not. A pool whose threads each ran a pass at the model's full count,
plus the model's load on the worker's main thread, held several such teams: a resnet18
pass at batch 1 took 35 ms instead of 21 ms on 2 cores, the cores 1.4 busy instead of
2.0 (bench/README.md, "Where Predict's overhead goes").

So:
- the wide lane is one thread that runs a pass with all the model's threads; the model
  is loaded there too (`call`), so the serving job starts no other team (batch jobs run
  on threads of their own, on Linux, whose teams end with them);
- narrow lanes are threads that run a pass with one thread each: one-thread passes start
  no OpenMP team at all, however many lanes there are;
- a batch that finds the model idle takes the wide lane; batches that wait together, at
  least as many as the model's threads, take narrow lanes, one core each (small batches
  scale better across passes than across intra-op threads: "Replicas or threads"), and
  the lanes go on taking what waits until it is drained. Parts of one batch submitted
  together (`submit_together`) always take narrow lanes. The two kinds never run at
  once, so the threads at work never exceed the model's share.

A new share (`set_threads`) applies from the next pass. torch's `set_num_threads` also
clears oneDNN's cached convolutions, so it is called only when a lane's count changes.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

__all__ = ["ForwardLanes", "LanesClosed"]

T = TypeVar("T")


class LanesClosed(RuntimeError):
    """A pass submitted after `close`: the model is being unloaded."""


class ForwardLanes:
    """Runs callables (forward passes) on the wide lane or on narrow lanes; see the module
    docstring. `threads`: the model's share of the cores; `max_narrow`: the most passes
    that may run at once."""

    def __init__(self, threads: int, max_narrow: int) -> None:
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._threads = max(1, threads)
        self._max_narrow = max(1, max_narrow)
        # Each waiting pass: its work, its future, and whether it must take a narrow lane.
        self._waiting: deque[tuple[Callable[[], object], Future[object], bool]] = deque()
        self._wide_busy = False
        self._narrow_busy = 0
        self._closed = False
        self._wide = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tandem-forward-wide")
        self._narrow = ThreadPoolExecutor(
            max_workers=self._max_narrow, thread_name_prefix="tandem-forward-narrow"
        )
        # The most passes seen running at once, for tests and benchmarks.
        self.most_at_once = 0

    @property
    def threads(self) -> int:
        return self._threads

    @property
    def narrow_lanes(self) -> int:
        """How many one-thread passes may run at once: the model's threads, within the cap."""
        return min(self._threads, self._max_narrow)

    def set_threads(self, threads: int) -> None:
        """The model's new share of the cores, from its next pass on."""
        with self._lock:
            self._threads = max(1, threads)

    def call(self, work: Callable[[], T]) -> T:
        """Runs `work` on the wide lane at the model's full count, now, and returns its
        result: the model's load, so that its threads are the wide lane's."""
        return self._wide.submit(self._with_threads, work, lambda: self._threads).result()

    def submit(self, work: Callable[[], T]) -> Future[T]:
        """Queues one forward pass; its future holds the result or the exception."""
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise LanesClosed("the model is being unloaded")
            self._waiting.append((work, future, False))  # type: ignore[arg-type]
            self._dispatch()
        return future

    def submit_together(self, works: list[Callable[[], T]]) -> list[Future[T]]:
        """Queues the parts of one batch, each to run on a narrow lane, side by side as
        far as lanes are free; their futures, in order."""
        futures: list[Future[T]] = [Future() for _ in works]
        with self._lock:
            if self._closed:
                raise LanesClosed("the model is being unloaded")
            for work, future in zip(works, futures, strict=True):
                self._waiting.append((work, future, True))  # type: ignore[arg-type]
            self._dispatch()
        return futures

    def close(self) -> None:
        """Waits for every queued and running pass to finish, then stops the lanes."""
        with self._lock:
            self._closed = True
            while self._waiting or self._wide_busy or self._narrow_busy:
                self._idle.wait()
        self._wide.shutdown(wait=True)
        self._narrow.shutdown(wait=True)

    # -- under the lock ---------------------------------------------------------------

    def _dispatch(self) -> None:
        while self._waiting and not self._wide_busy:
            narrow_lanes = self.narrow_lanes
            _, _, must_be_narrow = self._waiting[0]
            # Narrow lanes for a batch's parts (submit_together), or for as many waiting
            # batches as the model has threads (each gets a core), and once started,
            # until what waits is drained.
            if (
                not must_be_narrow
                and self._narrow_busy == 0
                and (narrow_lanes < 2 or len(self._waiting) < self._threads)
            ):
                work, future, _ = self._waiting.popleft()
                self._start_wide(work, future)
                return
            if self._narrow_busy >= narrow_lanes:
                return
            work, future, _ = self._waiting.popleft()
            self._start_narrow(work, future)

    def _start_wide(self, work: Callable[[], object], future: Future[object]) -> None:
        self._wide_busy = True
        self._note_running()
        threads = self._threads
        self._wide.submit(self._run, work, future, lambda: threads, wide=True)

    def _start_narrow(self, work: Callable[[], object], future: Future[object]) -> None:
        self._narrow_busy += 1
        self._note_running()
        self._narrow.submit(self._run, work, future, lambda: 1, wide=False)

    def _note_running(self) -> None:
        running = int(self._wide_busy) + self._narrow_busy
        self.most_at_once = max(self.most_at_once, running)

    # -- on a lane --------------------------------------------------------------------

    def _run(
        self,
        work: Callable[[], object],
        future: Future[object],
        threads: Callable[[], int],
        *,
        wide: bool,
    ) -> None:
        if future.set_running_or_notify_cancel():
            try:
                future.set_result(self._with_threads(work, threads))
            except BaseException as exc:
                future.set_exception(exc)
        with self._lock:
            if wide:
                self._wide_busy = False
            else:
                self._narrow_busy -= 1
            self._dispatch()
            self._idle.notify_all()

    @staticmethod
    def _with_threads(work: Callable[[], T], threads: Callable[[], int]) -> T:
        import torch

        count = threads()
        # The first call on a thread settles torch's count for it (OpenMP keeps one per
        # thread); a set only when it differs keeps oneDNN's cache (module docstring).
        if torch.get_num_threads() != count:
            torch.set_num_threads(count)
        return work()
