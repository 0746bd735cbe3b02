"""Sessions: a researcher holds one device so an iterative algorithm's jobs run back to back.

While a session is open the dispatcher gives its device only that session's jobs; others wait
(and say so). A session closes when it has been idle `session_idle_seconds` (no job of it
queued or running, none submitted), at `session_max_seconds` after opening, or when its owner or
an operator closes it; every open and close is audited. At most one session per device is open,
which the store enforces across broker replicas.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Callable

from broker.audit.log import AuditLog
from broker.clock import Clock
from broker.errors import BrokerError, ErrorCode, not_found
from broker.jobs.scheduler import SchedulerSettings
from broker.jobs.session_model import Session, SessionState
from broker.jobs.wakeups import DispatchWakeups
from broker.policy.attributes import format_time
from broker.store.runner import StoreRunner

log = logging.getLogger(__name__)


class SessionManager:
    def __init__(
        self,
        *,
        runner: StoreRunner,
        clock: Clock,
        audit: AuditLog,
        settings: SchedulerSettings,
        busy: Callable[[Session], bool],
        wakeups: DispatchWakeups,
    ) -> None:
        self._runner = runner
        self._clock = clock
        self._audit = audit
        self.settings = settings
        self._busy = busy  # whether the session has a job queued or running
        self._wakeups = wakeups  # told the device whose hold changed
        self._open: dict[str, Session] = {}  # device id -> its open session

    async def load(self) -> None:
        for session in await self._runner.call(self._runner.store.list_sessions):
            self._open[session.device_id] = session

    def active(self, device_id: str) -> Session | None:
        return self._open.get(device_id)

    async def open(self, caller: str, device_id: str, project: str, max_seconds: float) -> Session:
        now = self._clock.now()
        limit = self.settings.session_max_seconds
        length = limit if max_seconds <= 0 or max_seconds > limit else max_seconds
        session = Session(
            session_id=uuid.uuid4().hex,
            owner=caller,
            device_id=device_id,
            project=project,
            state=SessionState.OPEN,
            opened_at=now,
            last_activity_at=now,
            closes_at=now + length,
            idle_timeout_seconds=self.settings.session_idle_seconds,
        )
        detail = {"device": device_id, "project": project, "max_seconds": length}
        event = self._audit.event("session.opened", caller, session.session_id, detail)
        if not await self._runner.call(self._runner.store.insert_session, session, event):
            held = self._open.get(device_id)
            until = f" until at most {format_time(held.closes_at)}" if held else ""
            raise BrokerError(
                ErrorCode.FAILED_PRECONDITION,
                f"device {device_id} is held by another session{until}; try again later or "
                "submit without a session",
            )
        self._open[device_id] = session
        self._wakeups.kick(device_id)
        return session

    async def get(self, caller: str, session_id: str, *, operator: bool) -> Session:
        """The session if the caller may see it; someone else's is one store read and one
        NOT_FOUND, exactly like no session (the store matches the owner)."""
        owner = None if operator else caller
        session = await self._runner.call(self._runner.store.get_session, session_id, owner=owner)
        if session is None:
            raise not_found("session", session_id)
        return self._open.get(session.device_id, session) if session.open else session

    async def sessions(
        self, caller: str, *, operator: bool, device_id: str, closed: bool
    ) -> list[Session]:
        found = await self._runner.call(
            self._runner.store.list_sessions,
            owner=None if operator else caller,
            device_id=device_id or None,
            include_closed=closed,
        )
        return [self._open.get(s.device_id, s) if s.open else s for s in found]

    def for_submit(self, caller: str, session_id: str) -> Session:
        """The open session a job is submitted into; NOT_FOUND unless the caller owns it.
        Every open session is looked at (no early stop at a match), and the owner is part of
        the match, so someone else's session takes the same steps as a missing one."""
        mine = [s for s in self._open.values() if s.session_id == session_id and s.owner == caller]
        if not mine:
            raise BrokerError(
                ErrorCode.NOT_FOUND,
                f"session {session_id!r} not found or no longer open; open a new one",
            )
        return mine[0]

    def touch(self, session_id: str, *, submitted: bool = False) -> None:
        """A job of the session was submitted or finished: it is not idle."""
        for device_id, session in self._open.items():
            if session.session_id == session_id:
                self._open[device_id] = dataclasses.replace(
                    session,
                    last_activity_at=self._clock.now(),
                    jobs=session.jobs + (1 if submitted else 0),
                )
                return

    async def close(self, caller: str, session_id: str, reason: str, *, operator: bool) -> Session:
        session = await self.get(caller, session_id, operator=operator)
        if not session.open:
            return session
        who = "its owner" if caller == session.owner else f"operator {caller}"
        return await self._close(session, reason or f"closed by {who}", caller)

    async def expire(self) -> None:
        """Close sessions past their maximum length, or idle past their timeout (every tick)."""
        now = self._clock.now()
        for session in list(self._open.values()):
            if now >= session.closes_at:
                await self._close(session, "reached its maximum length", "broker")
            elif now - session.last_activity_at >= session.idle_timeout_seconds and not self._busy(
                session
            ):
                await self._close(session, "idle for longer than its timeout", "broker")
            elif self._busy(session):
                self.touch(session.session_id)

    async def _close(self, session: Session, reason: str, actor: str) -> Session:
        now = self._clock.now()
        current = await self._runner.call(self._runner.store.get_session, session.session_id)
        if current is None or not current.open:
            self._open.pop(session.device_id, None)
            return current or session
        closed = dataclasses.replace(
            session,
            state=SessionState.CLOSED,
            closed_reason=reason,
            closed_at=now,
            version=current.version + 1,
        )
        event = self._audit.event(
            "session.closed",
            actor,
            session.session_id,
            {"device": session.device_id, "reason": reason, "jobs": session.jobs},
        )
        saved = await self._runner.call(
            self._runner.store.save_session, closed, expected_version=current.version, event=event
        )
        if saved:
            self._open.pop(session.device_id, None)
            self._wakeups.kick(session.device_id)
            log.info("session %s on %s closed: %s", session.session_id, session.device_id, reason)
        return closed
