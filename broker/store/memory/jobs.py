"""The `Store` part of the memory store: jobs, their results, queues and the quota check."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from broker.access.model import QuotaCheck, check_quota
from broker.audit.model import AuditEvent
from broker.jobs.model import Job, JobResult, JobState, check_same_request
from broker.store.base import StoreError
from broker.store.memory.access import count_usage
from broker.store.memory.core import MemoryCore, check_version_moves
from broker.store.memory.database import JobRow, MemoryDatabase
from broker.store.memory.queue import queue_change

_LEASED = frozenset({JobState.DISPATCHED, JobState.RUNNING})


def _check_quota(db: MemoryDatabase, quota: QuotaCheck, shots: int) -> None:
    """Raises QuotaExceeded inside the insert's transaction, which then writes nothing."""
    for scope, name, limits in (
        ("principal", quota.owner, quota.owner_quota),
        ("project", quota.project, quota.project_quota),
    ):
        if limits.limited:
            owner, project = (name, None) if scope == "principal" else (None, name)
            usage = count_usage(db, owner=owner, project=project, since=quota.since)
            check_quota(scope, name, limits, usage, shots=shots)


def _rekey(db: MemoryDatabase, old: Job, new: Job) -> None:
    """Keep the (owner, idempotency key) index right when a save changes either."""
    before, after = (old.owner, old.idempotency_key), (new.owner, new.idempotency_key)
    if before == after:
        return
    if before[1] is not None:
        db.job_keys.delete((before[0], before[1]))
    if after[1] is not None:
        if (after[0], after[1]) in db.job_keys:
            raise StoreError(f"memory store: another job of {new.owner} has that idempotency key")
        db.job_keys.put((after[0], after[1]), new.job_id)


def _store_result(db: MemoryDatabase, result: JobResult) -> None:
    if result.job_id in db.results:
        raise StoreError(f"memory store: job {result.job_id} already has a result")
    # Keys and counts as the SQL stores' JSON column gives them back, in a dict of our own.
    counts = {str(key): int(value) for key, value in result.counts.items()}
    db.results.put(result.job_id, dataclasses.replace(result, counts=counts))


def _in_order(rows: list[JobRow], *, newest_first: bool = False) -> list[Job]:
    return [row.job for row in sorted(rows, key=lambda row: row.seq, reverse=newest_first)]


class MemoryJobs(MemoryCore):
    """Implements the job half of `Store` on the tables of `MemoryDatabase`."""

    def insert_job(
        self, job: Job, event: AuditEvent, quota: QuotaCheck | None = None
    ) -> tuple[Job, bool]:
        with self._write() as db:
            return self._insert_one(db, job, event, quota)

    def insert_jobs(
        self, items: Sequence[tuple[Job, AuditEvent, QuotaCheck | None]]
    ) -> list[tuple[Job, bool]]:
        """`insert_job` for several jobs in one transaction: all are stored, or none is."""
        with self._write() as db:
            return [self._insert_one(db, job, event, quota) for job, event, quota in items]

    def _insert_one(
        self, db: MemoryDatabase, job: Job, event: AuditEvent, quota: QuotaCheck | None
    ) -> tuple[Job, bool]:
        key = job.idempotency_key
        if key is not None and (existing := _by_key(db, job.owner, key)) is not None:
            return check_same_request(existing, job), False
        if job.job_id in db.jobs:
            raise StoreError(f"memory store: job id {job.job_id} is already taken")
        db.jobs.put(job.job_id, JobRow(seq=db.next_value("jobs"), job=job))
        if key is not None:
            db.job_keys.put((job.owner, key), job.job_id)
        self._append(db, event)
        if quota is not None:  # counted with this job included, after its audit entry
            _check_quota(db, quota, job.shots)
        queue_change(db, None, job)
        return job, True

    def save_job(
        self,
        job: Job,
        *,
        expected_version: int,
        event: AuditEvent | None = None,
        result: JobResult | None = None,
    ) -> bool:
        check_version_moves(f"job {job.job_id}", job.version, expected_version)
        if result is not None and result.job_id != job.job_id:
            raise ValueError(f"result for {result.job_id} saved with job {job.job_id}")
        with self._write() as db:
            row = db.jobs.get(job.job_id)
            if row is None or row.job.version != expected_version:
                return False
            _rekey(db, row.job, job)
            db.jobs.put(job.job_id, JobRow(seq=row.seq, job=job))
            if result is not None:
                _store_result(db, result)
            if event is not None:
                self._append(db, event)
            queue_change(db, row.job.state, job)
        return True

    def get_jobs(self, keys: Sequence[tuple[str, str | None]]) -> list[Job | None]:
        return [self.get_job(job_id, owner=owner) for job_id, owner in keys]

    def job_by_idempotency_key(self, owner: str, key: str) -> Job | None:
        with self._read() as db:
            return _by_key(db, owner, key)

    def get_job(self, job_id: str, *, owner: str | None = None) -> Job | None:
        with self._read() as db:
            row = db.jobs.get(job_id)
        if row is None or (owner is not None and row.job.owner != owner):
            return None
        return row.job

    def list_jobs(
        self,
        *,
        owner: str | None = None,
        device_id: str | None = None,
        states: Sequence[JobState] = (),
        limit: int = 100,
        before_seq: int | None = None,
    ) -> list[tuple[int, Job]]:
        if limit < 0:
            raise ValueError("limit must not be negative")
        wanted = frozenset(states)
        with self._read() as db:
            found = [
                row
                for row in db.jobs.values()
                if (owner is None or row.job.owner == owner)
                and (device_id is None or row.job.device_id == device_id)
                and (not wanted or row.job.state in wanted)
                and (before_seq is None or row.seq < before_seq)
            ]
        found.sort(key=lambda row: row.seq, reverse=True)
        return [(row.seq, row.job) for row in found[:limit]]

    def queued_jobs(self, device_id: str, limit: int) -> list[Job]:
        if limit < 0:
            raise ValueError("limit must not be negative")
        with self._read() as db:
            rows = [
                row
                for row in db.jobs.values()
                if row.job.device_id == device_id and row.job.state is JobState.QUEUED
            ]
        return _in_order(rows)[:limit]

    def replica_alive(self, replica_id: str) -> bool:
        """False: a memory database belongs to one process (its stores are connections)."""
        return False

    def leased_jobs(self) -> list[Job]:
        with self._read() as db:
            return _in_order([row for row in db.jobs.values() if row.job.state in _LEASED])

    def get_result(self, job_id: str) -> JobResult | None:
        with self._read() as db:
            stored = db.results.get(job_id)
        if stored is None:
            return None
        return dataclasses.replace(stored, counts=dict(stored.counts))


def _by_key(db: MemoryDatabase, owner: str, key: str) -> Job | None:
    """The owner's job stored under the idempotency key, if any."""
    job_id = db.job_keys.get((owner, key))
    if job_id is None:
        return None
    row = db.jobs.get(job_id)
    assert row is not None, "the idempotency index names a stored job"
    return row.job
