"""The `AccessStore` part of the shared SQL store: principals, projects, device operations and
the usage that quotas count.

Access records are small JSON documents keyed by (kind, name) with a compare-and-set version;
every write appends its audit event in the same transaction (helpers from `sql_parts`).
"""

# S608: only constant column lists and `?` markers are interpolated (see sql_store).
# ruff: noqa: S608

from __future__ import annotations

import json

from broker.access.documents import canonical
from broker.access.model import AccessRecord, RecordKind, Usage
from broker.audit.model import AuditEvent
from broker.jobs.model import JobState
from broker.store import changes
from broker.store.sql_parts import SqlParts, columns, insert_sql

ACCESS_COLUMNS = ("kind", "name", "doc", "version", "updated_at", "updated_by")
_ACCESS = columns(ACCESS_COLUMNS)
_INSERT_ACCESS = insert_sql(
    "access_records", ACCESS_COLUMNS, " ON CONFLICT (kind, name) DO NOTHING"
)
_UPDATE_ACCESS = (
    "UPDATE access_records SET doc = ?, version = ?, updated_at = ?, updated_by = ?"
    " WHERE kind = ? AND name = ? AND version = ?"
)
_ACTIVE = (JobState.QUEUED.value, JobState.DISPATCHED.value, JobState.RUNNING.value)
# A job refused or withdrawn before it ever reached a device spent no device time.
_COUNTED = (*_ACTIVE, JobState.COMPLETED.value, JobState.FAILED.value)


def _row(record: AccessRecord) -> tuple[object, ...]:
    return (
        record.kind.value,
        record.name,
        canonical(record.doc),
        record.version,
        record.updated_at,
        record.updated_by,
    )


def _record(row: tuple[object, ...]) -> AccessRecord:
    kind, name, doc, version, updated_at, updated_by = row
    return AccessRecord(
        kind=RecordKind(str(kind)),
        name=str(name),
        doc=json.loads(str(doc)),
        version=int(str(version)),
        updated_at=float(str(updated_at)),
        updated_by=str(updated_by),
    )


class SqlAccess(SqlParts):
    """Implements `AccessStore` with the helpers of `SqlStore`."""

    def put_access(
        self, record: AccessRecord, *, expected_version: int | None, event: AuditEvent
    ) -> bool:
        if expected_version is None:
            sql, params = _INSERT_ACCESS, _row(record)
        else:
            if record.version <= expected_version:
                raise ValueError(
                    f"{record.kind.value} {record.name}: version {record.version} must exceed"
                    f" the expected {expected_version}"
                )
            doc, version, at, by = _row(record)[2:]
            sql = _UPDATE_ACCESS
            params = (doc, version, at, by, record.kind.value, record.name, expected_version)
        with self._transaction() as cur:
            cur.execute(sql, params)
            if cur.rowcount != 1:
                return False
            self._append(cur, event)
            self._announce(cur, changes.ACCESS)
        return True

    def delete_access(
        self, kind: RecordKind, name: str, *, expected_version: int, event: AuditEvent
    ) -> bool:
        with self._transaction() as cur:
            cur.execute(
                "DELETE FROM access_records WHERE kind = ? AND name = ? AND version = ?",
                (kind.value, name, expected_version),
            )
            if cur.rowcount != 1:
                return False
            self._append(cur, event)
            self._announce(cur, changes.ACCESS)
        return True

    def access_record(self, kind: RecordKind, name: str) -> AccessRecord | None:
        found = self._query(
            f"SELECT {_ACCESS} FROM access_records WHERE kind = ? AND name = ?",
            (kind.value, name),
        )
        return _record(tuple(found[0])) if found else None

    def access_records(self, kind: RecordKind | None = None) -> list[AccessRecord]:
        if kind is None:
            found = self._query(f"SELECT {_ACCESS} FROM access_records ORDER BY kind, name")
        else:
            found = self._query(
                f"SELECT {_ACCESS} FROM access_records WHERE kind = ? ORDER BY name",
                (kind.value,),
            )
        return [_record(tuple(row)) for row in found]

    def access_fingerprint(self) -> tuple[int, int, float]:
        """Changes whenever any access record is added, changed or deleted (cheap to poll)."""
        row = self._query(
            "SELECT COUNT(*), COALESCE(SUM(version), 0), COALESCE(MAX(updated_at), 0)"
            " FROM access_records"
        )[0]
        return int(row[0]), int(row[1]), float(row[2])

    def job_usage(self, *, owner: str | None, project: str | None, since: float) -> Usage:
        """Active jobs and shots submitted since `since`, for one owner or one project."""
        column, value = ("owner", owner) if owner is not None else ("project", project)
        if value is None:
            raise ValueError("job_usage needs an owner or a project")
        marks = ", ".join("?" * len(_COUNTED))
        row = self._query(
            "SELECT"
            f" COALESCE(SUM(CASE WHEN state IN ({', '.join('?' * len(_ACTIVE))})"
            " THEN 1 ELSE 0 END), 0),"
            " COALESCE(SUM(CASE WHEN created_at >= ? THEN shots ELSE 0 END), 0)"
            f" FROM jobs WHERE {column} = ? AND state IN ({marks})",
            (*_ACTIVE, since, value, *_COUNTED),
        )[0]
        return Usage(active_jobs=int(row[0]), shots_last_day=int(row[1]))
