"""Work-conserving threads, as planned: `server.thread_share` on its own (no torch,
no workers), driven through every way jobs come and go."""

from __future__ import annotations

import random

import pytest

from server.thread_share import GPU_FEEDER_THREADS, Role, ThreadShare, plan


class Told:
    """The executor's side of `apply`: the counts each running job was told."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.calls: list[tuple[str, int]] = []

    def __call__(self, job_id: str, threads: int) -> None:
        self.counts[job_id] = threads
        self.calls.append((job_id, threads))


def share(cores: int) -> tuple[ThreadShare, Told]:
    told = Told()
    return ThreadShare(lambda device: cores, told), told


@pytest.mark.parametrize("cores", [1, 2, 3, 16])
@pytest.mark.parametrize("role", list(Role))
def test_a_lone_cpu_job_gets_every_core(cores: int, role: Role) -> None:
    threads, _ = share(cores)
    assert threads.join("a", "cpu", role) == cores


def test_cores_are_shared_equally_with_the_remainder_to_served_models_first() -> None:
    assert plan(16, [("t", Role.BATCH), ("s", Role.SERVING)]) == {"t": 8, "s": 8}
    assert plan(5, [("t", Role.BATCH), ("s", Role.SERVING)]) == {"s": 3, "t": 2}
    assert plan(7, [("t1", Role.BATCH), ("t2", Role.BATCH), ("s", Role.SERVING)]) == {
        "s": 3,
        "t1": 2,
        "t2": 2,
    }
    # Batch jobs share what is left over in the order they started.
    assert plan(5, [("t1", Role.BATCH), ("t2", Role.BATCH)]) == {"t1": 3, "t2": 2}


def test_more_jobs_than_cores_run_on_one_thread_each() -> None:
    assert plan(2, [(str(i), Role.BATCH) for i in range(5)]) == {str(i): 1 for i in range(5)}


def test_running_jobs_are_told_their_new_share_and_a_starting_one_is_not() -> None:
    threads, told = share(4)
    assert threads.join("a", "cpu", Role.BATCH) == 4
    assert told.calls == []  # a starting job gets its count with the job itself
    assert threads.join("b", "cpu", Role.BATCH) == 2
    assert told.calls == [("a", 2)]
    threads.leave("b")
    assert told.calls == [("a", 2), ("a", 4)]
    assert threads.snapshot() == {"a": 4}


def test_an_idle_served_model_leaves_its_cores_to_the_batch_job_until_it_resumes() -> None:
    threads, told = share(4)
    threads.join("train", "cpu", Role.BATCH)
    assert threads.join("serve", "cpu", Role.SERVING) == 2
    threads.pause("serve")
    assert threads.computing("cpu") == {"train": 4}
    assert told.counts == {"train": 4}
    threads.resume("serve")
    assert threads.computing("cpu") == {"train": 2, "serve": 2}
    assert told.counts["train"] == 2


def test_gpu_jobs_keep_their_feeder_threads_outside_the_cpus_share() -> None:
    threads, told = share(16)
    assert threads.join("gpu", "cuda:0", Role.BATCH) == GPU_FEEDER_THREADS
    assert threads.join("cpu", "cpu", Role.BATCH) == 16
    threads.leave("gpu")
    assert told.calls == []
    assert share(2)[0].join("gpu", "cuda:0", Role.BATCH) == 2  # never more than the cores


def test_devices_share_their_own_cores_apart() -> None:
    threads, _ = share(8)
    threads.join("a", "node-1/cpu", Role.BATCH)
    threads.join("b", "node-2/cpu", Role.BATCH)
    assert threads.snapshot() == {"a": 8, "b": 8}


@pytest.mark.parametrize("cores", [1, 2, 3, 4, 16])
def test_the_sum_never_exceeds_the_cores_as_jobs_come_and_go(cores: int) -> None:
    """A seeded walk of starts, ends, pauses and resumes: after every step, the counts
    the computing jobs were given (and told) sum to the cores, or to one each when
    there are more jobs than cores, and a lone job has them all."""
    threads, told = share(cores)
    rng = random.Random(cores)
    running: dict[str, Role] = {}
    for step in range(2_000):
        action = rng.random()
        if action < 0.4 or not running:
            job_id, role = f"j{step}", rng.choice(list(Role))
            told.counts[job_id] = threads.join(job_id, "cpu", role)
            running[job_id] = role
        elif action < 0.7:
            job_id = rng.choice(list(running))
            threads.leave(job_id)
            del running[job_id]
            del told.counts[job_id]
        else:
            job_id = rng.choice([j for j, r in running.items() if r is Role.SERVING] or [""])
            if job_id:
                (threads.pause if rng.random() < 0.5 else threads.resume)(job_id)
        computing = threads.computing("cpu")
        assert {j: told.counts[j] for j in computing} == computing  # each was told
        if computing:
            assert sum(computing.values()) == max(cores, len(computing))
            assert min(computing.values()) >= 1
        if len(computing) == 1:
            assert list(computing.values()) == [cores]
