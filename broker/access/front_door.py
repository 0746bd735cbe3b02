"""Refusals at the front door (the TLS handshake and the edge's authentication), counted by
reason at once and audited in aggregate: one audit entry per reason and identity per window,
however many packets, so a flood cannot flood the audit log, while a removed principal who
keeps trying is still seen. Repeated refusals of one identity feed an anomaly detector.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from broker.anomaly.monitor import AnomalyMonitor
from broker.audit.log import AuditLog
from broker.clock import Clock
from broker.metrics import BrokerMetrics

log = logging.getLogger(__name__)

# Distinct (reason, identity) pairs kept per window; past it, refusals are summed under
# "(others)": identities come from the caller's certificate and must not grow our memory.
MAX_TRACKED = 256
OTHERS = "(others)"


@dataclass(slots=True)
class _Tally:
    count: int = 0
    first_at: float = 0.0
    last_at: float = 0.0


@dataclass(slots=True)
class _Window:
    started: float
    tallies: dict[tuple[str, str], _Tally] = field(default_factory=dict)


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
        self._audit = audit
        self._metrics = metrics
        self._anomalies = anomalies
        self._clock = clock
        self._window_seconds = window_seconds
        self._window = _Window(started=clock.now())

    def refused(self, reason: str, who: str = "") -> None:
        """Count one refusal (cheap, never blocks); `who` is the identity the caller claimed
        or authenticated as, "" when none was learned (a failed TLS handshake)."""
        self._metrics.front_door_refusals.labels(reason).inc()
        if who:
            self._anomalies.front_door_refusal(who)
        now = self._clock.now()
        tallies = self._window.tallies
        key = (reason, who)
        if key not in tallies and len(tallies) >= MAX_TRACKED:
            key = (reason, OTHERS)
        tally = tallies.setdefault(key, _Tally(first_at=now))
        tally.count += 1
        tally.last_at = now

    async def flush(self, *, force: bool = False) -> None:
        """Audit the window's refusals once it has run its length (on the tick; at shutdown
        with `force`): one entry per reason and identity, with the count."""
        window = self._window
        now = self._clock.now()
        if not window.tallies or (not force and now - window.started < self._window_seconds):
            return
        self._window = _Window(started=now)
        for (reason, who), tally in sorted(window.tallies.items()):
            detail = {
                "reason": reason,
                "count": tally.count,
                "first_at": tally.first_at,
                "last_at": tally.last_at,
                "window_seconds": round(now - window.started, 3),
            }
            await self._audit.record("edge.refused", who or "unauthenticated", who, detail)
        total = sum(t.count for t in window.tallies.values())
        log.warning(
            "front door refused %d connections or calls in the last %.0f s",
            total,
            now - window.started,
        )
