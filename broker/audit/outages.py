"""Store outages in the audit log: one `store.outage` entry per outage, written once the store
is back (nothing can be written during one), with how long it lasted and how many store calls
failed meanwhile. The broker log and /metrics say so as it happens; this is the lasting record."""

from __future__ import annotations

from broker.audit.log import AuditLog
from broker.store.health import StoreHealth


class OutageAudit:
    def __init__(self, health: StoreHealth, audit: AuditLog) -> None:
        self._health = health
        self._audit = audit

    async def flush(self) -> None:
        """Audit the outages that ended (on the tick; a store away again leaves them for later)."""
        for outage in self._health.ended():
            await self._audit.record(
                "store.outage",
                "broker",
                "store",
                {"seconds": round(outage.seconds, 3), "failed_calls": outage.failed_calls},
            )
            self._health.audited(outage)
