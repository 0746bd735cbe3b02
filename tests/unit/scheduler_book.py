"""A store and the windowed scheduler driven as the ledger drives them (write, then observe),
beside the all-in-memory reference scheduler fed the same changes: for the scheduler's tests."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Collection

from broker.audit.model import AuditEvent
from broker.jobs.model import PRIORITY_NORMAL, Circuit, Job, JobState, Lease
from broker.jobs.scheduler import Scheduler, SchedulerSettings
from broker.store.base import BrokerStore
from broker.store.runner import StoreRunner
from qtestbed.shared.circuits import CircuitFormat
from tests.unit import reference_scheduler as reference

CIRCUIT = Circuit(format=CircuitFormat.OPENQASM2, payload=b"x", digest="d", num_qubits=2, depth=2)
WEIGHTS = {"a": 1, "b": 1, "c": 2}


def job(
    job_id: str,
    project: str,
    at: float,
    priority: int = PRIORITY_NORMAL,
    shots: int = 100,
    session_id: str = "",
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
        session_id=session_id,
    )


def dispatched(j: Job, at: float) -> Job:
    lease = Lease(lease_id="l", device_id="dev", expires_at=at + 60, dispatch_nonce=b"n")
    return j.transition(JobState.DISPATCHED, now=at, lease=lease)


def _event(j: Job) -> AuditEvent:
    return AuditEvent(kind=f"job.{j.state.value.lower()}", actor="o", subject=j.job_id, at=0.0)


class Book:
    """One device's queue: the store, the windowed scheduler, and the reference."""

    def __init__(self, store: BrokerStore, *, aging: float = 10.0, window: int = 3) -> None:
        store.migrate()
        self.store = store
        self.runner = StoreRunner(store)
        settings = SchedulerSettings(aging_seconds=aging, window_jobs=window)
        self.scheduler = Scheduler(settings, weight_of=self.weight, runner=self.runner)
        self.reference = reference.Scheduler(
            reference.SchedulerSettings(aging_seconds=aging), weight_of=self.weight
        )
        self.queued: dict[str, Job] = {}
        self.running: dict[str, Job] = {}

    @staticmethod
    def weight(project: str) -> int:
        return WEIGHTS.get(project, 1)

    def fresh_scheduler(self) -> Scheduler:
        """Another scheduler on the same store, as a restarted broker has (call `load`)."""
        return Scheduler(self.scheduler.settings, weight_of=self.weight, runner=self.runner)

    async def submit(self, new: Job) -> Job:
        priced = self.scheduler.price(new)
        await self.runner.call(self.store.insert_jobs, [(priced, _event(priced), None)])
        self._observe(priced)
        return priced

    async def save(self, old: Job, new: Job) -> None:
        saved = await self.runner.call(
            self.store.save_job, new, expected_version=old.version, event=_event(new)
        )
        assert saved
        self._observe(new)

    def _observe(self, j: Job) -> None:
        self.queued.pop(j.job_id, None)
        self.running.pop(j.job_id, None)
        if j.state is JobState.QUEUED:
            self.queued[j.job_id] = j
        elif j.state is JobState.DISPATCHED:
            self.running[j.job_id] = j
        self.scheduler.observe(j)
        self.reference.observe(j)

    async def dispatch_next(
        self, at: float, projects: Collection[str] | None = None, session: str | None = None
    ) -> Job | None:
        """Dispatch what the scheduler picks, after checking the reference picks the same."""
        head = await self.scheduler.next_job("dev", projects, session)
        expected = self.reference.next_job("dev", projects, session)
        assert (head and head.job_id) == (expected and expected.job_id)
        if head is not None:
            await self.save(self.queued[head.job_id], dispatched(self.queued[head.job_id], at))
        return head

    async def cancel(self, job_id: str, at: float) -> None:
        old = self.queued[job_id]
        await self.save(old, old.transition(JobState.CANCELLED, now=at))

    async def requeue(self, job_id: str, at: float) -> None:
        old = self.running[job_id]
        await self.save(old, dataclasses.replace(old.transition(JobState.QUEUED, now=at)))

    async def positions(self, scheduler: Scheduler | None = None) -> dict[str, int | None]:
        """Every queued job's position, asked at once (as the streams on a moved queue ask)."""
        s = scheduler or self.scheduler
        ids = list(self.queued)
        found = await asyncio.gather(*(s.position(self.queued[job_id]) for job_id in ids))
        return dict(zip(ids, found, strict=True))

    def reference_positions(self) -> dict[str, int | None]:
        return {job_id: self.reference.position(j) for job_id, j in self.queued.items()}

    def all_jobs_as_queued(self) -> list[Job]:
        """Each queued job, and a stale queued version of each job that has left the queue."""
        stale = [dataclasses.replace(j, state=JobState.QUEUED) for j in self.running.values()]
        return [*self.queued.values(), *stale]

    def reference_positions_of_all(self) -> dict[str, int | None]:
        """`reference_positions`, and None for each job that has left the queue."""
        return {**self.reference_positions(), **dict.fromkeys(self.running)}

    def close(self) -> None:
        self.runner.close()
        self.store.close()
