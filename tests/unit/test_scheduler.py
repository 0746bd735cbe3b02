"""The scheduler on its own: positions always equal the order the dispatcher follows, backlogged
projects share in proportion to their weights, and aging bounds how long a job is overtaken."""

from __future__ import annotations

import copy
import dataclasses
import random

import pytest

from broker.jobs.model import (
    PRIORITY_HIGH,
    PRIORITY_LOW,
    PRIORITY_NORMAL,
    Circuit,
    Job,
    JobState,
    Lease,
)
from broker.jobs.scheduler import Scheduler, SchedulerSettings
from qtestbed.shared.circuits import CircuitFormat

CIRCUIT = Circuit(format=CircuitFormat.OPENQASM2, payload=b"x", digest="d", num_qubits=2, depth=2)
WEIGHTS = {"a": 1, "b": 1, "c": 2}


def job(
    job_id: str, project: str, at: float, priority: int = PRIORITY_NORMAL, shots: int = 100
) -> Job:
    return Job(
        job_id=job_id,
        owner="o",
        device_id="dev",
        circuit=CIRCUIT,
        shots=shots,
        state=JobState.QUEUED,
        created_at=at,
        updated_at=at,
        project=project,
        priority=priority,
    )


def dispatched(j: Job, at: float) -> Job:
    lease = Lease(lease_id="l", device_id="dev", expires_at=at + 60, dispatch_nonce=b"n")
    return j.transition(JobState.DISPATCHED, now=at, lease=lease)


def scheduler(aging: float = 10.0) -> Scheduler:
    return Scheduler(SchedulerSettings(aging_seconds=aging), weight_of=lambda p: WEIGHTS.get(p, 1))


def drain_order(s: Scheduler) -> list[str]:
    """The order next_job yields if nothing else happens (dispatching each in turn)."""
    taken = []
    clone = copy.deepcopy(s)
    at = 1e6
    while (head := clone.next_job("dev")) is not None:
        taken.append(head.job_id)
        clone.observe(dispatched(head, at))
    return taken


@pytest.mark.parametrize("seed", range(25))
def test_positions_are_the_dispatch_order_after_any_sequence_of_events(seed: int) -> None:
    rng = random.Random(seed)
    s = scheduler(aging=rng.choice([0.5, 5.0, 50.0]))
    queued: dict[str, Job] = {}
    now = 0.0
    for step in range(120):
        now += rng.random()
        action = rng.random()
        if action < 0.6 or not queued:
            new = job(
                f"j{step}",
                rng.choice("abc"),
                now,
                rng.choice([PRIORITY_LOW, PRIORITY_NORMAL, PRIORITY_HIGH]),
                shots=rng.choice([10, 100, 1000]),
            )
            queued[new.job_id] = new
            s.observe(new)
        elif action < 0.85:
            head = s.next_job("dev")
            assert head is not None
            s.observe(dispatched(queued.pop(head.job_id), now))
        else:
            gone = queued.pop(rng.choice(sorted(queued)))
            s.observe(gone.transition(JobState.CANCELLED, now=now))
        order = drain_order(s)
        assert order == [j.job_id for j in s.order("dev")]
        assert sorted(order) == sorted(queued)
        for place, job_id in enumerate(order, start=1):
            assert s.position(queued[job_id]) == place
        assert s.depth("dev") == len(queued)


def test_backlogged_projects_share_by_weight() -> None:
    s = scheduler()
    for n in range(300):
        for project in WEIGHTS:
            s.observe(job(f"{project}{n}", project, float(n)))
    served = {p: 0 for p in WEIGHTS}
    for n in range(400):
        head = s.next_job("dev")
        assert head is not None
        served[head.project] += 1
        s.observe(dispatched(head, 1000.0 + n))
    assert served == {"a": 100, "b": 100, "c": 200}


def test_a_job_is_overtaken_only_by_jobs_submitted_within_the_aging_window() -> None:
    s = scheduler(aging=10.0)
    low = job("low", "a", 100.0, PRIORITY_LOW)
    s.observe(low)
    highs = [job(f"h{n}", "a", 100.0 + 3 * n, PRIORITY_HIGH) for n in range(12)]
    for h in highs:
        s.observe(h)
    order = [j.job_id for j in s.order("dev")]
    # HIGH is two classes above LOW: a 20 s head start.
    ahead = [h.job_id for h in highs if h.created_at - 20.0 < low.created_at]
    assert order[: len(ahead)] == ahead
    assert order[len(ahead)] == "low"


def test_an_idle_project_earns_no_credit() -> None:
    s = scheduler()
    for n in range(50):
        s.observe(job(f"a{n}", "a", float(n)))
    for n in range(40):
        head = s.next_job("dev")
        assert head is not None
        s.observe(dispatched(head, 100.0 + n))
    # b arrives late: it shares from now on, it does not get 40 jobs' worth of catch-up.
    for n in range(20):
        s.observe(job(f"b{n}", "b", 200.0 + n))
    nxt = [j.project for j in s.order("dev")][:10]
    assert nxt.count("b") == 5


def test_a_requeued_job_goes_back_to_the_head_of_its_project() -> None:
    s = scheduler()
    first, second = job("x", "a", 1.0), job("y", "a", 2.0)
    s.observe(first)
    s.observe(second)
    head = s.next_job("dev")
    assert head is not None
    running = dispatched(head, 3.0)
    s.observe(running)
    back = dataclasses.replace(running.transition(JobState.QUEUED, now=4.0))
    s.observe(back)
    assert [j.job_id for j in s.order("dev")] == ["x", "y"]
    assert s.position(back) == 1


@pytest.mark.parametrize("seed", range(25))
def test_a_change_moves_no_job_ahead_of_the_position_take_moves_names(seed: int) -> None:
    """WatchJob wakes only the streams at or behind `take_moves`' position: a job ahead of it
    whose position changed would be a stream left showing a stale position."""
    rng = random.Random(seed)
    s = scheduler(aging=rng.choice([0.5, 5.0, 50.0]))
    queued: dict[str, Job] = {}
    now = 0.0
    for step in range(150):
        before = {j.job_id: place for place, j in enumerate(s.order("dev"), start=1)}
        now += rng.random()
        action = rng.random()
        if action < 0.55 or not queued:
            new = job(
                f"j{step}",
                rng.choice("abc"),
                now - rng.choice([0.0, 0.0, 30.0]),  # sometimes a requeue-like early place
                rng.choice([PRIORITY_LOW, PRIORITY_NORMAL, PRIORITY_HIGH]),
                shots=rng.choice([10, 100, 1000]),
            )
            queued[new.job_id] = new
            s.observe(new)
        elif action < 0.8:
            head = s.next_job("dev", projects=rng.choice([None, ["a"], ["b", "c"]]))
            if head is None:
                continue
            s.observe(dispatched(queued.pop(head.job_id), now))
        else:
            gone = queued.pop(rng.choice(sorted(queued)))
            s.observe(gone.transition(JobState.CANCELLED, now=now))
        moves = s.take_moves()
        after = {j.job_id: place for place, j in enumerate(s.order("dev"), start=1)}
        changed = [i for i in before.keys() & after.keys() if before[i] != after[i]]
        if changed:
            start = moves["dev"]
            assert all(before[i] >= start for i in changed), (step, start, changed)
        assert s.take_moves() == {}
