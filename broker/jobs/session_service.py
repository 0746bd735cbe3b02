"""Session calls of the job API: open (decided like a submission), read, list and close.
Researchers see their own sessions; operators see and close any."""

from __future__ import annotations

from collections.abc import Sequence

from broker.access.clearance import ClearanceGate
from broker.clock import Clock
from broker.jobs.guard import CallerGuard, project_of
from broker.jobs.ports import DriverView
from broker.jobs.session_model import Session
from broker.jobs.sessions import SessionManager
from broker.policy import Action, JobAttributes


class SessionService:
    def __init__(
        self,
        *,
        clock: Clock,
        guard: CallerGuard,
        gate: ClearanceGate,
        sessions: SessionManager,
        drivers: DriverView,
    ) -> None:
        self._clock = clock
        self._guard = guard
        self._gate = gate
        self._sessions = sessions
        self._drivers = drivers

    async def open(self, caller: str, device_id: str, project: str, max_seconds: float) -> Session:
        principal = self._guard.principal(caller)
        now = self._clock.now()
        device = self._guard.device(caller, device_id, now)
        chosen = project_of(principal, project)
        decision = self._gate.check(
            Action.SUBMIT_JOB,
            caller,
            device,
            now=now,
            job=JobAttributes(project=chosen),
            attestation="affirming" if self._drivers.attested(device_id, now) else "none",
        )
        if not decision.allowed:
            await self._guard.refuse(caller, device, decision)
        return await self._sessions.open(caller, device.device_id, chosen, max_seconds)

    async def get(self, caller: str, session_id: str) -> Session:
        operator = self._guard.is_operator(caller)
        return await self._sessions.get(caller, session_id, operator=operator)

    async def close(self, caller: str, session_id: str, reason: str) -> Session:
        operator = self._guard.is_operator(caller)
        return await self._sessions.close(caller, session_id, reason, operator=operator)

    async def list(self, caller: str, device_id: str, closed: bool) -> Sequence[Session]:
        return await self._sessions.sessions(
            caller, operator=self._guard.is_operator(caller), device_id=device_id, closed=closed
        )
