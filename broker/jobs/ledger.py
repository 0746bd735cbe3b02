"""Every job write goes through here: store (with its audit event), then metrics and watchers.

Keeping the side effects in one place means no code path can change a job without it being
audited, counted and pushed to the researcher's WatchJob stream.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from broker.access.model import QuotaCheck
from broker.audit.model import AuditEntry, AuditEvent
from broker.clock import Clock
from broker.jobs.model import Job, JobResult
from broker.jobs.watch import JobWatchers
from broker.metrics import BrokerMetrics
from broker.store.runner import StoreRunner


class JobLedger:
    def __init__(
        self, runner: StoreRunner, metrics: BrokerMetrics, watchers: JobWatchers, clock: Clock
    ) -> None:
        self.runner = runner
        self.metrics = metrics
        self.watchers = watchers
        self.clock = clock
        # Told about every job write, before watchers (the scheduler's queue book).
        self.on_change: list[Callable[[Job], None]] = []
        # Told once about every job that reaches a terminal state (usage metrics).
        self.on_finished: list[Callable[[Job], None]] = []

    def event(
        self, kind: str, actor: str, subject: str, detail: Mapping[str, Any] | None = None
    ) -> AuditEvent:
        return AuditEvent(
            kind=kind, actor=actor, subject=subject, at=self.clock.now(), detail=dict(detail or {})
        )

    async def insert_many(
        self, items: list[tuple[Job, AuditEvent, QuotaCheck | None]]
    ) -> list[tuple[Job, bool]]:
        """Insert several jobs atomically (all or none); QuotaExceeded writes nothing."""
        stored = await self.runner.call(self.runner.store.insert_jobs, items)
        for job, created in stored:
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
        saved = await self.runner.call(
            self.runner.store.save_job,
            job,
            expected_version=expected_version,
            event=event,
            result=result,
        )
        if saved:
            self._observe(job)
        return saved

    async def audit(self, event: AuditEvent) -> AuditEntry:
        return await self.runner.call(self.runner.store.append_audit, event)

    def _observe(self, job: Job) -> None:
        self.metrics.jobs.labels(job.device_id, job.state.value).inc()
        for callback in self.on_change:
            callback(job)
        if job.state.terminal:
            for callback in self.on_finished:
                callback(job)
        self.watchers.publish(job)
