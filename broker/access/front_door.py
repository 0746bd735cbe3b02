"""Refusals at the front door (the TLS handshake and the edge's authentication), counted by
reason at once and audited in aggregate: one audit entry per reason and identity per window,
however many packets, so a flood cannot flood the audit log, while a removed principal who
keeps trying is still seen. Repeated refusals of one identity feed an anomaly detector.
"""

from __future__ import annotations

import logging

from broker.anomaly.monitor import AnomalyMonitor
from broker.audit.log import AuditLog
from broker.audit.refusals import MAX_TRACKED, OTHERS, RefusalLog
from broker.clock import Clock
from broker.metrics import BrokerMetrics

log = logging.getLogger(__name__)

__all__ = ["MAX_TRACKED", "OTHERS", "FrontDoor"]


class FrontDoor:
    def __init__(
        self,
        *,
        audit: AuditLog,
        metrics: BrokerMetrics,
        anomalies: AnomalyMonitor,
        clock: Clock,
        window_seconds: float = 60.0,
    ) -> None:
        self._metrics = metrics
        self._anomalies = anomalies
        self._log = RefusalLog(
            kind="edge.refused",
            what="connections or calls at the front door",
            audit=audit,
            clock=clock,
            logger=log,
            window_seconds=window_seconds,
        )

    def refused(self, reason: str, who: str = "") -> None:
        """Count one refusal (cheap, never blocks); `who` is the identity the caller claimed
        or authenticated as, "" when none was learned (a failed TLS handshake)."""
        self._metrics.front_door_refusals.labels(reason).inc()
        if who:
            self._anomalies.front_door_refusal(who)
        self._log.tally(reason, who)

    async def flush(self, *, force: bool = False) -> None:
        """Audit the window's refusals once it has run its length (on the tick; at shutdown
        with `force`): one entry per reason and identity, with the count."""
        await self._log.flush(force=force)
