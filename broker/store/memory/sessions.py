"""The `SessionStore` part of the memory store: at most one open session per device."""

from __future__ import annotations

from broker.audit.model import AuditEvent
from broker.jobs.session_model import Session, SessionState
from broker.store.memory.core import MemoryCore, check_version_moves


class MemorySessions(MemoryCore):
    """Implements `SessionStore` on the tables of `MemoryDatabase`."""

    def insert_session(self, session: Session, event: AuditEvent) -> bool:
        """A new session, unless the device already has an open one or the id is taken
        (False, nothing written)."""
        with self._write() as db:
            device_busy = any(
                s.device_id == session.device_id and s.state is SessionState.OPEN
                for s in db.sessions.values()
            )
            if device_busy or session.session_id in db.sessions:
                return False
            db.sessions.put(session.session_id, session)
            self._append(db, event)
        return True

    def save_session(
        self, session: Session, *, expected_version: int, event: AuditEvent | None = None
    ) -> bool:
        check_version_moves(f"session {session.session_id}", session.version, expected_version)
        with self._write() as db:
            stored = db.sessions.get(session.session_id)
            if stored is None or stored.version != expected_version:
                return False
            db.sessions.put(session.session_id, session)
            if event is not None:
                self._append(db, event)
        return True

    def get_session(self, session_id: str, *, owner: str | None = None) -> Session | None:
        with self._read() as db:
            session = db.sessions.get(session_id)
        if session is None or (owner is not None and session.owner != owner):
            return None
        return session

    def list_sessions(
        self,
        *,
        owner: str | None = None,
        device_id: str | None = None,
        include_closed: bool = False,
    ) -> list[Session]:
        with self._read() as db:
            found = [
                s
                for s in db.sessions.values()
                if (owner is None or s.owner == owner)
                and (device_id is None or s.device_id == device_id)
                and (include_closed or s.state is SessionState.OPEN)
            ]
        # Sorting is stable: sessions opened at the same time stay in the order they were stored.
        return sorted(found, key=lambda s: s.opened_at)
