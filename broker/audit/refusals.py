"""Refusals that a flood can multiply, audited in aggregate: one entry per reason and identity
per window, with the count, however many refusals; identities bounded per window (the rest are
summed under "(others)"), and one log line per window instead of one per refusal.

Used by the front door (TLS handshakes and the gRPC edge) and the link door (the driver link).
Counting in the caller's metric happens at once; this only decides what is written down.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from broker.audit.log import AuditLog
from broker.clock import Clock

# Distinct (reason, identity) pairs kept per window; past it, refusals are summed under
# OTHERS: identities come from the caller and must not grow our memory.
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


class RefusalLog:
    def __init__(
        self,
        *,
        kind: str,
        what: str,
        audit: AuditLog,
        clock: Clock,
        logger: logging.Logger,
        window_seconds: float = 60.0,
    ) -> None:
        """`kind` is the audit entry's kind (e.g. "edge.refused"); `what` names what was
        refused in the one summary log line per window (e.g. "driver link messages")."""
        self._kind = kind
        self._what = what
        self._audit = audit
        self._clock = clock
        self._log = logger
        self._window_seconds = window_seconds
        self._window: _Window | None = None

    def tally(self, reason: str, who: str = "", count: int = 1) -> None:
        """Note `count` refusals (cheap, never blocks); `who` is the identity the caller claimed
        or authenticated as, "" when none was learned. A window opens at its first refusal."""
        now = self._clock.now()
        if self._window is None:
            self._window = _Window(started=now)
        tallies = self._window.tallies
        key = (reason, who)
        if key not in tallies and len(tallies) >= MAX_TRACKED:
            key = (reason, OTHERS)
        entry = tallies.get(key)
        if entry is None:
            entry = tallies[key] = _Tally(first_at=now)
        entry.count += count
        entry.last_at = now

    async def flush(self, *, force: bool = False) -> None:
        """Audit the window's refusals once it has run its length (on the tick; at shutdown
        with `force`): one entry per reason and identity, with the count."""
        window = self._window
        now = self._clock.now()
        if window is None or (not force and now - window.started < self._window_seconds):
            return
        self._window = None
        for (reason, who), entry in sorted(window.tallies.items()):
            detail = {
                "reason": reason,
                "count": entry.count,
                "first_at": entry.first_at,
                "last_at": entry.last_at,
                "window_seconds": round(now - window.started, 3),
            }
            await self._audit.record(self._kind, who or "unauthenticated", who, detail)
        by_reason: dict[str, int] = {}
        for (reason, _who), entry in window.tallies.items():
            by_reason[reason] = by_reason.get(reason, 0) + entry.count
        self._log.warning(
            "refused %d %s in the last %.0f s (%s)",
            sum(by_reason.values()),
            self._what,
            now - window.started,
            ", ".join(f"{reason}: {n}" for reason, n in sorted(by_reason.items())),
        )
