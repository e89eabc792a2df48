"""Preemption: a waiting task takes the room that less urgent running training holds.

The arbiter decides (`Arbiter.plan_preemptions`: a task that waits only because of a
slot or GPU memory held by training less urgent than it by `preempt_margin`, and the
fewest such tasks whose leaving lets it in) and keeps the freed room for that task.
This module acts on its plans after every pass of the arbiter: it asks each victim to
yield (`Executor.preempt`: a resume point at its next batch boundary, or a forced stop
after `preempt_grace_s`), says in both tasks' logs who preempts whom, and words the
victim's state event when it has yielded. The task manager then queues the victim again.

Everything runs on the event loop thread.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from engines.executor import Executor, JobOutcome
from scheduler import PreemptionPlan
from server.config import ServerConfig
from server.dispatcher import Dispatcher
from server.journal import Journal
from server.metrics import Metrics
from server.records import TaskRecord

log = logging.getLogger(__name__)


class Preemptions:
    """Carries out the arbiter's preemption plans (see the module docstring).

    `tasks` is the task manager's live view of QUEUED and RUNNING tasks, read only.
    """

    def __init__(
        self,
        config: ServerConfig,
        dispatcher: Dispatcher,
        executor: Executor,
        journal: Journal,
        metrics: Metrics,
        tasks: Mapping[str, TaskRecord],
    ) -> None:
        self._config = config
        self._dispatcher = dispatcher
        self._executor = executor
        self._journal = journal
        self._metrics = metrics
        self._tasks = tasks
        # Victim -> who it yields to ("task 1f0c...", "served model 9a3e..."), until it
        # has yielded.
        self._by: dict[str, str] = {}

    async def watch(self) -> None:
        """Acts after every pass of the arbiter (a tick, a task queued), until cancelled."""
        while True:
            await self._dispatcher.next_pass()
            try:
                self.act()
            except Exception:  # a bug here must not stop the next passes
                log.exception("preemption planning failed")

    def act(self) -> None:
        """Asks the victims of every new plan to yield."""
        plans = self._dispatcher.arbiter.plan_preemptions(
            margin=self._config.preempt_margin,
            min_runtime_s=self._config.preempt_min_runtime_s,
        )
        for plan in plans:
            # The victims are asked first: the arbiter has marked them yielding and
            # reserved their room, so a log line that cannot be written must not leave
            # one of them unasked.
            for victim_id in plan.victims:
                self._executor.preempt(victim_id, self._config.preempt_grace_s)
            self._tell(plan)

    def _tell(self, plan: PreemptionPlan) -> None:
        """Who preempts whom, in both tasks' logs."""
        waiting = self._tasks.get(plan.job_id)
        # A served model waits for a slot too, under its own job id, not a task's.
        who = f"task {plan.job_id}" if waiting is not None else f"served model {plan.job_id}"
        urgency = f" (priority {waiting.priority})" if waiting is not None else ""
        for victim_id in plan.victims:
            victim = self._tasks.get(victim_id)
            if victim is None:
                continue  # it ended in the same instant: its room is free anyway
            self._by[victim_id] = who
            self._journal.event(
                victim,
                "log",
                f"preempted by {who}{urgency}, which needs its room on {plan.device}: "
                "saving a checkpoint at the next batch boundary",
                level="warning",
            )
        if waiting is not None:
            victims = ", ".join(plan.victims)
            self._journal.event(
                waiting,
                "log",
                f"preempting task{'s' if len(plan.victims) > 1 else ''} {victims} on "
                f"{plan.device}: it starts there as soon as they yield",
            )

    def yielded(self, task: TaskRecord, outcome: JobOutcome) -> str:
        """Counts the preemption of `task`, which has ended its job as asked, and returns
        the sentence of its PREEMPTED state event."""
        by = self._by.pop(task.task_id, "")
        self._metrics.preempted()
        whom = f" by {by}" if by else ""
        where = outcome.preemption
        if where is None:
            return (
                f"preempted{whom}: it did not yield within {self._config.preempt_grace_s:g} s "
                "and was stopped; it resumes from the newest state it saved"
            )
        return (
            f"preempted{whom} at epoch {where.epoch} after batch {where.batches_done}; "
            f"saving its checkpoint took {where.save_seconds:.2f} s"
        )

    def forget(self, task_id: str) -> None:
        """`task_id` ended otherwise (cancelled, failed, finished before it yielded)."""
        self._by.pop(task_id, None)
