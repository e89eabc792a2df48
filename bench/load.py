"""Load: many clients submitting small tasks while many followers stream their logs.

A real `tandem serve` process on loopback (port 0) takes `tasks` small tasks (tiny
training runs and batch inference over the synthetic set, random priorities, every
`cancel_every`-th cancelled by its client) from `clients` concurrent clients, each on
its own channel, while `followers` other clients stream the logs of the first tasks
from their start. What must hold, checked by `LoadReport.problems`:

- every task ends (SUCCEEDED, FAILED with a reason, or CANCELLED), none is missing;
- every follower saw every event of its task, in order, ending with its terminal
  state event, exactly as the stored log has them;
- the limits are never exceeded: a sampler reads `GetResources` all through the run,
  and afterwards every task's [start, end) interval is swept per (device, kind), which
  catches what sampling could miss;
- the server's memory (resident set, its own process: workers are separate) grows by
  no more than `rss_growth_limit_mb` from after warm-up to the end.

`make test` runs a small shape (tests/server/test_load.py); `python -m bench --only load`
runs the full one: 1,000 tasks, 50 clients, 100 followers. Bounded in count and time:
every call has a deadline and the run has one overall.
"""

from __future__ import annotations

import random
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from bench.report import Goal
from tandem.client import TERMINAL_STATES
from tandem.v1 import (
    inference_service_pb2,
    inference_service_pb2_grpc,
    resource_service_pb2,
    resource_service_pb2_grpc,
    task_pb2,
    task_service_pb2,
    task_service_pb2_grpc,
    training_service_pb2,
    training_service_pb2_grpc,
)
from tests.harness.served import ServedProcess


def train_request(priority: int = 5, request_id: str = "") -> training_service_pb2.TrainRequest:
    """The smallest real work: a couple of steps of a small network on 16 px images."""
    return training_service_pb2.TrainRequest(
        model="mobilenet_v3_small",
        dataset="synthetic",
        device="cpu",
        image_size=16,
        batch_size=64,
        epochs=1,
        priority=priority,
        request_id=request_id,
    )


CALL_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class LoadShape:
    tasks: int
    clients: int
    followers: int
    cancel_every: int = 10
    # One in `inference_every` tasks is batch inference, the rest training.
    inference_every: int = 2
    deadline_s: float = 1800.0
    rss_growth_limit_mb: float = 200.0


FULL = LoadShape(tasks=1000, clients=50, followers=100)
SMOKE = LoadShape(tasks=12, clients=3, followers=4, deadline_s=300.0)


@dataclass
class LoadReport:
    shape: LoadShape
    task_ids: list[str] = field(default_factory=list)
    states: dict[str, int] = field(default_factory=dict)
    failed_without_reason: list[str] = field(default_factory=list)
    not_ended: list[str] = field(default_factory=list)
    follower_problems: list[str] = field(default_factory=list)
    client_errors: list[str] = field(default_factory=list)
    # (device, kind) -> the most running at once, by sampling and by the interval sweep.
    sampled_peak: dict[tuple[str, str], int] = field(default_factory=dict)
    swept_peak: dict[tuple[str, str], int] = field(default_factory=dict)
    limits: dict[tuple[str, str], int] = field(default_factory=dict)
    samples: int = 0
    rss_after_warmup_mb: float = 0.0
    rss_peak_mb: float = 0.0
    rss_end_mb: float = 0.0
    seconds: float = 0.0

    @property
    def limit_violations(self) -> list[str]:
        found = []
        for source, peaks in (("sampled", self.sampled_peak), ("swept", self.swept_peak)):
            for key, peak in peaks.items():
                limit = self.limits.get(key)
                if limit is not None and peak > limit:
                    found.append(f"{source}: {key[1]} on {key[0]} reached {peak} > {limit}")
        return found

    @property
    def rss_growth_mb(self) -> float:
        return self.rss_end_mb - self.rss_after_warmup_mb

    def problems(self) -> list[str]:
        """Everything that broke a promise; empty when the run was clean."""
        found = [*self.client_errors, *self.follower_problems, *self.limit_violations]
        if len(self.task_ids) != self.shape.tasks:
            found.append(f"{len(self.task_ids)} of {self.shape.tasks} tasks were accepted")
        found += [f"task {t} did not end" for t in self.not_ended]
        found += [f"task {t} FAILED without a reason" for t in self.failed_without_reason]
        if self.samples == 0:
            found.append("the limit sampler took no sample")
        if self.rss_growth_mb > self.shape.rss_growth_limit_mb:
            found.append(
                f"server memory grew {self.rss_growth_mb:.0f} MB "
                f"(limit {self.shape.rss_growth_limit_mb:.0f} MB)"
            )
        return found


# -- the server under load -------------------------------------------------------------


def rss_mb(pid: int) -> float:
    """Resident memory of process `pid` in MB, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class Stubs:
    """One client: its own channel, so 50 clients are 50 connections."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address)
        self.training = training_service_pb2_grpc.TrainingServiceStub(self.channel)
        self.inference = inference_service_pb2_grpc.InferenceServiceStub(self.channel)
        self.tasks = task_service_pb2_grpc.TaskServiceStub(self.channel)
        self.resources = resource_service_pb2_grpc.ResourceServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def follow(
        self, task_id: str, timeout_s: float = CALL_TIMEOUT_S * 10
    ) -> list[task_pb2.TaskEvent]:
        """The task's events from its start until it ends (or `timeout_s` passes)."""
        request = task_service_pb2.LogsRequest(task_id=task_id, follow=True)
        return [r.event for r in self.tasks.Logs(request, timeout=max(timeout_s, 1.0))]

    def stored(self, task_id: str) -> list[task_pb2.TaskEvent]:
        request = task_service_pb2.LogsRequest(task_id=task_id, follow=False)
        return [r.event for r in self.tasks.Logs(request, timeout=CALL_TIMEOUT_S)]

    def get(self, task_id: str) -> task_pb2.Task:
        request = task_service_pb2.GetTaskRequest(task_id=task_id)
        task: task_pb2.Task = self.tasks.GetTask(request, timeout=CALL_TIMEOUT_S).task
        return task


# -- the run -----------------------------------------------------------------------------


def run_load(shape: LoadShape, workdir: Path, seed: int = 0) -> LoadReport:
    """Runs `shape` against a fresh server in `workdir`; returns what was seen."""
    report = LoadReport(shape)
    with ServedProcess(workdir / "data", "--host", "127.0.0.1") as served:
        pid, address = served.pid, served.grpc_address
        setup = Stubs(address)
        try:
            model_task = _train_one_model(setup)
            report.limits = _limits(setup)
        finally:
            setup.close()
        report.rss_after_warmup_mb = rss_mb(pid)
        started = time.monotonic()
        _LoadRun(shape, address, pid, model_task, report, seed).run()
        report.seconds = time.monotonic() - started
        report.rss_end_mb = rss_mb(pid)
        _check_ends(address, report)
    return report


def _train_one_model(stubs: Stubs) -> str:
    """A finished training task whose model the inference tasks use (also warms up)."""
    task_id: str = stubs.training.Train(train_request(), timeout=CALL_TIMEOUT_S).task.task_id
    stubs.follow(task_id)
    state = stubs.get(task_id)
    if state.state != task_pb2.TASK_STATE_SUCCEEDED:
        raise RuntimeError(f"the warm-up training failed: {state.error}")
    return task_id


def _limits(stubs: Stubs) -> dict[tuple[str, str], int]:
    reply = stubs.resources.GetResources(
        resource_service_pb2.GetResourcesRequest(), timeout=CALL_TIMEOUT_S
    )
    limits = {}
    for device, value in reply.max_concurrent.items():
        limits[(device, "training")] = value.training
        limits[(device, "inference")] = value.inference
    return limits


class _LoadRun:
    def __init__(
        self,
        shape: LoadShape,
        address: str,
        pid: int,
        model_task: str,
        report: LoadReport,
        seed: int,
    ) -> None:
        self.shape = shape
        self.address = address
        self.pid = pid
        self.model_task = model_task
        self.report = report
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        # Set when every client has returned (followers then know no more ids come),
        # and when the whole run is over (the sampler stops).
        self.clients_done = threading.Event()
        self.done = threading.Event()
        self.deadline = time.monotonic() + shape.deadline_s
        # The first `followers` task ids, handed to followers as they are accepted.
        self.to_follow: list[str] = []
        self.follow_ready = threading.Condition(self.lock)

    def run(self) -> None:
        per_client = split_evenly(self.shape.tasks, self.shape.clients)
        clients = [
            threading.Thread(target=self._client, args=(i, n), name=f"client-{i}", daemon=True)
            for i, n in enumerate(per_client)
        ]
        followers = [
            threading.Thread(target=self._follower, args=(i,), name=f"follower-{i}", daemon=True)
            for i in range(self.shape.followers)
        ]
        sampler = threading.Thread(target=self._sample, name="sampler", daemon=True)
        sampler.start()
        for thread in [*clients, *followers]:
            thread.start()
        for thread in clients:
            thread.join(self._remaining())
        with self.follow_ready:  # a follower still waiting for an id will not get one
            self.clients_done.set()
            self.follow_ready.notify_all()
        for thread in followers:
            thread.join(self._remaining())
        self.done.set()
        sampler.join(CALL_TIMEOUT_S)
        stuck = [t.name for t in [*clients, *followers] if t.is_alive()]
        if stuck:
            self._error(f"still running at the deadline: {', '.join(stuck)}")

    def _remaining(self) -> float:
        return max(1.0, self.deadline - time.monotonic())

    def _client(self, index: int, count: int) -> None:
        stubs = Stubs(self.address)
        rng = random.Random(self.rng.random())
        mine: list[str] = []
        try:
            for n in range(count):
                ordinal = index * 100_000 + n
                task_id = self._submit(stubs, rng, ordinal)
                mine.append(task_id)
                with self.follow_ready:
                    self.report.task_ids.append(task_id)
                    accepted = len(self.report.task_ids)
                    if len(self.to_follow) < self.shape.followers:
                        self.to_follow.append(task_id)
                        self.follow_ready.notify_all()
                if accepted % self.shape.cancel_every == 0:
                    _cancel(stubs, task_id)
            for task_id in mine:  # wait for the client's own tasks to end
                stubs.follow(task_id, self._remaining())
        except grpc.RpcError as exc:
            self._error(f"client {index}: {exc.code().name} {exc.details()}")
        finally:
            stubs.close()

    def _submit(self, stubs: Stubs, rng: random.Random, ordinal: int) -> str:
        priority = rng.randint(0, 10)
        request_id = f"load-{ordinal}"
        if rng.randrange(self.shape.inference_every) == 0:
            infer = inference_service_pb2.InferRequest(
                task_id=self.model_task,
                dataset="synthetic",
                device="cpu",
                priority=priority,
                request_id=request_id,
            )
            reply = stubs.inference.Infer(infer, timeout=CALL_TIMEOUT_S)
        else:
            train = train_request(priority, request_id)
            reply = stubs.training.Train(train, timeout=CALL_TIMEOUT_S)
        task_id: str = reply.task.task_id
        return task_id

    def _follower(self, index: int) -> None:
        with self.follow_ready:
            while len(self.to_follow) <= index and not self.clients_done.is_set():
                self.follow_ready.wait()
            if len(self.to_follow) <= index:
                return
            task_id = self.to_follow[index]
        stubs = Stubs(self.address)
        try:
            seen = stubs.follow(task_id, self._remaining())
            stored = stubs.stored(task_id)
            problem = _compare(task_id, seen, stored)
            if problem:
                with self.lock:
                    self.report.follower_problems.append(problem)
        except grpc.RpcError as exc:
            self._error(f"follower {index}: {exc.code().name} {exc.details()}")
        finally:
            stubs.close()

    def _sample(self) -> None:
        """Reads the running counts over and over until the clients are done."""
        stubs = Stubs(self.address)
        peaks: dict[tuple[str, str], int] = defaultdict(int)
        try:
            while not self.done.is_set():
                reply = stubs.resources.GetResources(
                    resource_service_pb2.GetResourcesRequest(), timeout=CALL_TIMEOUT_S
                )
                for device, usage in reply.device_usage.items():
                    for kind, running in (
                        ("training", usage.training),
                        ("inference", usage.inference),
                    ):
                        peaks[(device, kind)] = max(peaks[(device, kind)], running)
                self.report.samples += 1
                self.report.rss_peak_mb = max(self.report.rss_peak_mb, rss_mb(self.pid))
                # A breath between reads, so the sampler does not take a core from the
                # server it watches; the interval sweep afterwards misses nothing.
                self.done.wait(0.005)
        except grpc.RpcError as exc:
            self._error(f"sampler: {exc.code().name} {exc.details()}")
        except OSError as exc:  # /proc/<pid> is gone: the server died
            self._error(f"sampler: the server process is gone ({exc})")
        finally:
            stubs.close()
            self.report.sampled_peak = dict(peaks)

    def _error(self, message: str) -> None:
        with self.lock:
            self.report.client_errors.append(message)


def _cancel(stubs: Stubs, task_id: str) -> None:
    request = task_service_pb2.CancelTaskRequest(task_id=task_id)
    try:
        stubs.tasks.CancelTask(request, timeout=CALL_TIMEOUT_S)
    except grpc.RpcError as exc:
        # It may have ended already: that is the one refusal a cancel may meet.
        if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:
            raise


def _compare(task_id: str, seen: list[task_pb2.TaskEvent], stored: list[task_pb2.TaskEvent]) -> str:
    """Why a follower's view of a task differs from its stored log ('' if it does not)."""
    seqs = [e.seq for e in seen]
    if seqs != list(range(1, len(seen) + 1)):
        return f"task {task_id}: follower saw seqs {seqs[:20]}..., not 1..{len(seen)}"
    if not seen or seen[-1].state not in TERMINAL_STATES:
        return f"task {task_id}: follower's stream ended without a terminal state event"
    if [(e.seq, e.message) for e in seen] != [(e.seq, e.message) for e in stored]:
        return f"task {task_id}: follower saw {len(seen)} events, the log holds {len(stored)}"
    return ""


def _check_ends(address: str, report: LoadReport) -> None:
    """Every accepted task ended; FAILED ones say why; the interval sweep of limits."""
    stubs = Stubs(address)
    intervals: dict[tuple[str, str], list[tuple[float, int]]] = defaultdict(list)
    states: dict[str, int] = defaultdict(int)
    try:
        for task_id in report.task_ids:
            task = stubs.get(task_id)
            states[task_pb2.TaskState.Name(task.state)] += 1
            if task.state not in TERMINAL_STATES:
                report.not_ended.append(task_id)
            elif task.state == task_pb2.TASK_STATE_FAILED and not task.error:
                report.failed_without_reason.append(task_id)
            if task.HasField("start_time") and task.assigned_device:
                kind = "training" if task.kind == task_pb2.TASK_KIND_TRAINING else "inference"
                key = (task.assigned_device, kind)
                start = task.start_time.ToNanoseconds()
                end = task.end_time.ToNanoseconds() if task.HasField("end_time") else 2**63
                # Ends sort before starts at the same instant: [start, end) intervals.
                intervals[key] += [(start, 1), (end, -1)]
    finally:
        stubs.close()
    report.states = dict(states)
    for key, points in intervals.items():
        running = peak = 0
        for _, change in sorted(points, key=lambda p: (p[0], p[1])):
            running += change
            peak = max(peak, running)
        report.swept_peak[key] = peak


def split_evenly(total: int, parts: int) -> list[int]:
    """`total` in `parts` shares that differ by at most one, the larger first."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


# -- as a benchmark ------------------------------------------------------------------------

GOALS = (
    Goal("load_problems", maximum=0),
    Goal("load_limit_violations", maximum=0),
)


def run(smoke: bool) -> dict[str, float]:
    shape = SMOKE if smoke else FULL
    with tempfile.TemporaryDirectory(prefix="tandem-load-") as folder:
        report = run_load(shape, Path(folder))
    for problem in report.problems():
        print(f"load: {problem}", file=sys.stderr)
    return figures(report)


def figures(report: LoadReport) -> dict[str, float]:
    """The report as benchmark figures (counts of problems are 0 on a clean run)."""
    return {
        "load_tasks": float(len(report.task_ids)),
        "load_tasks_per_s": len(report.task_ids) / max(report.seconds, 1e-9),
        "load_problems": float(len(report.problems())),
        "load_limit_violations": float(len(report.limit_violations)),
        "load_limit_samples": float(report.samples),
        "load_server_rss_growth_mb": report.rss_growth_mb,
        "load_server_rss_peak_mb": report.rss_peak_mb,
    }
