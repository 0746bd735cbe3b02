"""Refusals of the separation-of-duties rules: counted by rule at once
(`qtestbed_access_refusals_total{rule}`) and audited as `access.<area>.refused`.

Refusals of role-gated calls (principal edits, decisions, revocations: operators, approvers and
security only) are audited one by one: they are few, and each is worth a look. Refusals of
filing a request, which anyone may attempt, are audited in aggregate, one entry per rule and
principal per window with the count, so a flood cannot flood the audit log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from broker.audit.log import AuditLog
from broker.clock import Clock
from broker.errors import BrokerError
from broker.metrics import BrokerMetrics

# Distinct (area, rule, principal) keys kept per window; past it they sum under "(others)".
MAX_TRACKED = 256
OTHERS = "(others)"


@dataclass(slots=True)
class _Window:
    started: float
    counts: dict[tuple[str, str, str], int] = field(default_factory=dict)


class AccessRefusals:
    def __init__(
        self, *, audit: AuditLog, metrics: BrokerMetrics, clock: Clock, window_seconds: float
    ) -> None:
        self._audit = audit
        self._metrics = metrics
        self._clock = clock
        self._window_seconds = window_seconds
        self._window = _Window(started=clock.now())

    async def refuse(
        self, area: str, caller: str, subject: str, error: BrokerError, **detail: Any
    ) -> BrokerError:
        """Count and audit one refusal now; returns `error` for the caller to raise."""
        self._metrics.access_refusals.labels(error.rule_id).inc()
        detail = {"rule": error.rule_id, "reason": error.detail, **detail}
        await self._audit.record(f"access.{area}.refused", caller, subject, detail)
        return error

    def tally(self, area: str, caller: str, error: BrokerError) -> BrokerError:
        """Count one refusal now and audit it with the window's others; returns `error`."""
        self._metrics.access_refusals.labels(error.rule_id).inc()
        counts = self._window.counts
        key = (area, error.rule_id, caller)
        if key not in counts and len(counts) >= MAX_TRACKED:
            key = (area, error.rule_id, OTHERS)
        counts[key] = counts.get(key, 0) + 1
        return error

    async def flush(self, *, force: bool = False) -> None:
        """Audit the window's tallied refusals once it has run its length (on the tick)."""
        window, now = self._window, self._clock.now()
        if not window.counts or (not force and now - window.started < self._window_seconds):
            return
        self._window = _Window(started=now)
        for (area, rule, caller), count in sorted(window.counts.items()):
            seconds = round(now - window.started, 3)
            detail = {"rule": rule, "count": count, "window_seconds": seconds}
            await self._audit.record(f"access.{area}.refused", caller, "", detail)
