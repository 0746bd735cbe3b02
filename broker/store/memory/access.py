"""The `AccessStore` part of the memory store: access records by compare-and-set, and the job
usage that quotas count."""

from __future__ import annotations

import json

from broker.access.model import AccessRecord, RecordKind, Usage
from broker.audit.model import AuditEvent
from broker.jobs.model import JobState
from broker.store.memory.core import MemoryCore, check_version_moves, to_json, version_allows
from broker.store.memory.database import AccessRow, MemoryDatabase

_ACTIVE = frozenset({JobState.QUEUED, JobState.DISPATCHED, JobState.RUNNING})
# A job refused or withdrawn before it ever reached a device spent no device time.
_COUNTED = _ACTIVE | {JobState.COMPLETED, JobState.FAILED}
_CHANGES = "access_changes"


def count_usage(
    db: MemoryDatabase, *, owner: str | None, project: str | None, since: float
) -> Usage:
    """Active jobs, and shots of jobs created since `since`, of one owner (if given) or else
    one project; cancelled and denied jobs count for neither."""
    if owner is None and project is None:
        raise ValueError("job_usage needs an owner or a project")
    jobs = [
        row.job
        for row in db.jobs.values()
        if row.job.state in _COUNTED
        and (row.job.owner == owner if owner is not None else row.job.project == project)
    ]
    return Usage(
        active_jobs=sum(1 for job in jobs if job.state in _ACTIVE),
        shots_last_day=sum(job.shots for job in jobs if job.created_at >= since),
    )


def _row(record: AccessRecord) -> AccessRow:
    return AccessRow(
        kind=record.kind,
        name=record.name,
        doc=to_json(record.doc),
        version=record.version,
        updated_at=float(record.updated_at),
        updated_by=record.updated_by,
    )


def _record(row: AccessRow) -> AccessRecord:
    return AccessRecord(
        kind=row.kind,
        name=row.name,
        doc=json.loads(row.doc),
        version=row.version,
        updated_at=row.updated_at,
        updated_by=row.updated_by,
    )


class MemoryAccess(MemoryCore):
    """Implements `AccessStore` on the tables of `MemoryDatabase`."""

    def put_access(
        self, record: AccessRecord, *, expected_version: int | None, event: AuditEvent
    ) -> bool:
        check_version_moves(f"{record.kind.value} {record.name}", record.version, expected_version)
        key = (record.kind, record.name)
        with self._write() as db:
            stored = db.access.get(key)
            if not version_allows(stored.version if stored else None, expected_version):
                return False
            db.access.put(key, _row(record))
            db.next_value(_CHANGES)
            self._append(db, event)
        return True

    def delete_access(
        self, kind: RecordKind, name: str, *, expected_version: int, event: AuditEvent
    ) -> bool:
        with self._write() as db:
            stored = db.access.get((kind, name))
            if stored is None or stored.version != expected_version:
                return False
            db.access.delete((kind, name))
            db.next_value(_CHANGES)
            self._append(db, event)
        return True

    def access_record(self, kind: RecordKind, name: str) -> AccessRecord | None:
        with self._read() as db:
            row = db.access.get((kind, name))
        return _record(row) if row is not None else None

    def access_records(self, kind: RecordKind | None = None) -> list[AccessRecord]:
        with self._read() as db:
            rows = [row for row in db.access.values() if kind is None or row.kind is kind]
        rows.sort(key=lambda row: (row.kind.value, row.name))
        return [_record(row) for row in rows]

    def access_fingerprint(self) -> tuple[int, int, float]:
        """(records, changes committed so far, latest update time): the change count moves
        with every write, even one that leaves count, versions and times as they were."""
        with self._read() as db:
            latest = max((row.updated_at for row in db.access.values()), default=0.0)
            return len(db.access), db.meta.get(_CHANGES) or 0, latest

    def job_usage(self, *, owner: str | None, project: str | None, since: float) -> Usage:
        """Active jobs and shots submitted since `since`, for one owner or one project."""
        with self._read() as db:
            return count_usage(db, owner=owner, project=project, since=since)
