"""The sessions part of the shared SQL store (helpers from `sql_parts`): insert, compare-and-set
update and reads, each write with its audit event in the same transaction."""

# S608: only constant column lists and `?` markers are interpolated (see sql_store).
# ruff: noqa: S608

from __future__ import annotations

from typing import Any

from broker.audit.model import AuditEvent
from broker.jobs.session_model import Session, SessionState
from broker.store.sql_parts import SqlParts, by_id_of, columns, insert_sql

SESSION_COLUMNS = (
    "session_id",
    "owner",
    "device_id",
    "project",
    "state",
    "opened_at",
    "last_activity_at",
    "closes_at",
    "idle_timeout_seconds",
    "closed_reason",
    "closed_at",
    "jobs",
    "version",
)
_SESSIONS = columns(SESSION_COLUMNS)
_INSERT = insert_sql("sessions", SESSION_COLUMNS, " ON CONFLICT (session_id) DO NOTHING")
_UPDATE = (
    "UPDATE sessions SET "
    + ", ".join(f"{c} = ?" for c in SESSION_COLUMNS[1:])
    + " WHERE session_id = ? AND version = ?"
)


def _row(s: Session) -> tuple[Any, ...]:
    return (
        s.session_id,
        s.owner,
        s.device_id,
        s.project,
        s.state.value,
        s.opened_at,
        s.last_activity_at,
        s.closes_at,
        s.idle_timeout_seconds,
        s.closed_reason,
        s.closed_at,
        s.jobs,
        s.version,
    )


def _session(row: Any) -> Session:
    r = dict(zip(SESSION_COLUMNS, row, strict=True))
    return Session(
        session_id=r["session_id"],
        owner=r["owner"],
        device_id=r["device_id"],
        project=r["project"],
        state=SessionState(r["state"]),
        opened_at=r["opened_at"],
        last_activity_at=r["last_activity_at"],
        closes_at=r["closes_at"],
        idle_timeout_seconds=r["idle_timeout_seconds"],
        closed_reason=r["closed_reason"],
        closed_at=r["closed_at"],
        jobs=r["jobs"],
        version=r["version"],
    )


class SqlSessions(SqlParts):
    def insert_session(self, session: Session, event: AuditEvent) -> bool:
        """A new session, unless the device already has an open one (False, nothing written)."""
        with self._transaction() as cur:
            self._serialize(cur, f"session:{session.device_id}")
            cur.execute(
                "SELECT COUNT(*) FROM sessions WHERE device_id = ? AND state = ?",
                (session.device_id, SessionState.OPEN.value),
            )
            if int(cur.fetchone()[0]):
                return False
            cur.execute(_INSERT, _row(session))
            if cur.rowcount != 1:
                return False
            self._append(cur, event)
        return True

    def save_session(
        self, session: Session, *, expected_version: int, event: AuditEvent | None = None
    ) -> bool:
        if session.version <= expected_version:
            raise ValueError(f"session {session.session_id}: version must exceed the expected")
        with self._transaction() as cur:
            cur.execute(_UPDATE, (*_row(session)[1:], session.session_id, expected_version))
            if cur.rowcount != 1:
                return False
            if event is not None:
                self._append(cur, event)
        return True

    def get_session(self, session_id: str, *, owner: str | None = None) -> Session | None:
        select = f"SELECT {_SESSIONS} FROM sessions WHERE session_id = ?"
        found = self._query(*by_id_of(select, session_id, owner))
        return _session(found[0]) if found else None

    def list_sessions(
        self,
        *,
        owner: str | None = None,
        device_id: str | None = None,
        include_closed: bool = False,
    ) -> list[Session]:
        clauses, params = ["1 = 1"], []
        for column, value in (("owner", owner), ("device_id", device_id)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if not include_closed:
            clauses.append("state = ?")
            params.append(SessionState.OPEN.value)
        found = self._query(
            f"SELECT {_SESSIONS} FROM sessions WHERE {' AND '.join(clauses)} ORDER BY opened_at",
            params,
        )
        return [_session(row) for row in found]
