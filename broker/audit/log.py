"""Appending to the audit log what changes nothing else: verdicts, refusals, reloads.

Writes that change a job, a device or an access record carry their event into the store
themselves (same transaction); this is for decisions that are only recorded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from broker.audit.model import AuditEntry, AuditEvent
from broker.clock import Clock
from broker.store.runner import StoreRunner


class AuditLog:
    def __init__(self, runner: StoreRunner, clock: Clock) -> None:
        self._runner = runner
        self._clock = clock

    def event(
        self, kind: str, actor: str, subject: str, detail: Mapping[str, Any] | None = None
    ) -> AuditEvent:
        """An event stamped now, for a write that carries it into the store itself."""
        return AuditEvent(
            kind=kind, actor=actor, subject=subject, at=self._clock.now(), detail=dict(detail or {})
        )

    async def record(
        self, kind: str, actor: str, subject: str, detail: Mapping[str, Any] | None = None
    ) -> AuditEntry:
        """Append one event on its own, durable when this returns."""
        return await self.append(self.event(kind, actor, subject, detail))

    async def append(self, event: AuditEvent) -> AuditEntry:
        return await self._runner.call(self._runner.store.append_audit, event)
