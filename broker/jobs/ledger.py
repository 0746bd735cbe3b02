"""Every job write goes through here: store (with its audit event), then metrics, observers
and watchers.

Keeping the side effects in one place means no code path can change a job without it being
audited, counted, seen by the scheduler and pushed to the researcher's WatchJob stream.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from broker.access.model import QuotaCheck
from broker.audit.model import AuditEvent
from broker.jobs.job_reads import JobReads
from broker.jobs.model import Job, JobResult
from broker.jobs.watch import JobWatchers
from broker.metrics import BrokerMetrics
from broker.store.base import BrokerStore
from broker.store.runner import StoreRunner


@dataclass(frozen=True, kw_only=True, slots=True)
class JobObservers:
    """Who is told about job writes: `on_change` of every write, before watchers (the
    scheduler's queue book); `on_finished` once per job that reaches a terminal state."""

    on_change: Sequence[Callable[[Job], None]] = ()
    on_finished: Sequence[Callable[[Job], None]] = ()


class JobLedger:
    def __init__(
        self,
        runner: StoreRunner,
        metrics: BrokerMetrics,
        watchers: JobWatchers,
        observers: JobObservers,
        price: Callable[[Job], Job] | None = None,
    ) -> None:
        self._runner = runner
        self._reads = JobReads(runner)
        # Fixes a new job's place and slot cost before it is stored (the scheduler's `price`).
        self._price = price
        self._metrics = metrics
        self._watchers = watchers
        self._observers = observers

    async def get(self, job_id: str, *, owner: str | None = None) -> Job | None:
        """The job; with `owner`, None unless they own it (see `Store.get_job`)."""
        return await self._reads.get(job_id, owner)

    async def by_idempotency_key(self, owner: str, key: str) -> Job | None:
        """The owner's job stored under `key`, if any (a retry names it)."""
        return await self._runner.call(self._runner.store.job_by_idempotency_key, owner, key)

    async def insert_many(
        self,
        items: list[tuple[Job, AuditEvent, QuotaCheck | None]],
        *,
        place: Callable[[Job], bool] = lambda job: False,
    ) -> list[tuple[Job, bool, int | None]]:
        """Insert several jobs atomically (all or none); QuotaExceeded writes nothing. Each
        is returned with whether it was created and, for a created job that `place` says only
        the store can place, its queue position counted in the same store call."""
        if self._price is not None:
            items = [(self._price(job), event, quota) for job, event, quota in items]
        wanted = [place(job) for job, _, _ in items]
        stored = await self._runner.call(_insert_placed, self._runner.store, items, wanted)
        for job, created, _ in stored:
            if created:
                self._observe(job)
        return stored

    async def save(
        self,
        job: Job,
        *,
        expected_version: int,
        event: AuditEvent,
        result: JobResult | None = None,
    ) -> bool:
        """Compare-and-set write; False when someone else changed the job first."""
        saved = await self._runner.call(
            self._runner.store.save_job,
            job,
            expected_version=expected_version,
            event=event,
            result=result,
        )
        if saved:
            self._observe(job)
        return saved

    async def written_elsewhere(self, device_id: str) -> None:
        """Another process sharing the store wrote jobs of this device (a replica, or a
        sibling worker: its dispatcher leased and completed what was queued here): each job
        of the device a WatchJob stream here watches is read again, and its stream sent the
        store's version if it is newer. Nothing is counted: the writer counted it."""
        if not self._runner.store.replicated:
            return  # only this broker writes: every change was published as it was saved
        for job_id in sorted(self._watchers.watched_on(device_id)):
            job = await self.get(job_id)
            if job is not None:
                self._watchers.publish(job)

    def _observe(self, job: Job) -> None:
        self._metrics.jobs.labels(job.device_id, job.state.value).inc()
        for callback in self._observers.on_change:
            callback(job)
        if job.state.terminal:
            for callback in self._observers.on_finished:
                callback(job)
        self._watchers.publish(job)


def _insert_placed(
    store: BrokerStore,
    items: list[tuple[Job, AuditEvent, QuotaCheck | None]],
    wanted: list[bool],
) -> list[tuple[Job, bool, int | None]]:
    """On the store thread: the insert, then the positions asked for, in one store call (one
    hop to the store thread and back instead of one more per job; the count sees the insert,
    as a separate call made right after it would). A batch's jobs on one device are counted
    together: one range read for a run of them rather than a few reads each."""
    stored = store.insert_jobs(items)
    placed: dict[str, list[Job]] = {}
    for (job, created), want in zip(stored, wanted, strict=True):
        if created and want:
            placed.setdefault(job.device_id, []).append(job)
    positions: dict[str, int | None] = {}
    for device_id, jobs in placed.items():
        positions.update(store.queue_positions(device_id, jobs))
    return [
        (job, created, positions.get(job.job_id) if created and want else None)
        for (job, created), want in zip(stored, wanted, strict=True)
    ]
