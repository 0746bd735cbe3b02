"""The report's access-request section: how elevations were asked for, decided and ended, and
the separation-of-duties refusals, from the audit log of the period. Counts by elevation kind
and by rule only: never who asked, who decided or for what value."""

from __future__ import annotations

from collections import Counter

from broker.report.model import GrantRow, SeparationRow
from broker.report.source import Facts

KINDS = ("tier", "role", "licence", "device")
_STEPS = {
    "access.request.created": "filed",
    "access.request.granted": "granted",
    "access.request.denied": "denied",
    "access.request.revoked": "revoked",
    "access.request.expired": "expired",
}
_REFUSED = ("access.principal.refused", "access.decision.refused", "access.revoke.refused")
_AGGREGATED = "access.request.refused"  # one entry per rule and principal per window


def grant_rows(facts: Facts) -> tuple[GrantRow, ...]:
    steps: Counter[tuple[str, str]] = Counter()
    for event in facts.period_events:
        step = _STEPS.get(event.kind)
        if step is None:
            continue
        kind = str(event.detail.get("kind", ""))
        kind = kind if kind in KINDS else "other"
        steps[(kind, step)] += 1
        if step == "granted" and event.detail.get("break_glass") is True:
            steps[(kind, "break_glass")] += 1
    kinds = [k for k in (*KINDS, "other") if any(key[0] == k for key in steps)]
    return tuple(
        GrantRow(
            kind=k,
            filed=steps[(k, "filed")],
            granted=steps[(k, "granted")],
            break_glass=steps[(k, "break_glass")],
            denied=steps[(k, "denied")],
            revoked=steps[(k, "revoked")],
            expired=steps[(k, "expired")],
        )
        for k in kinds
    )


def separation_rows(facts: Facts) -> tuple[SeparationRow, ...]:
    counts: Counter[str] = Counter()
    for event in facts.period_events:
        rule = str(event.detail.get("rule", "")) or "(none)"
        if event.kind in _REFUSED:
            counts[rule] += 1
        elif event.kind == _AGGREGATED:
            count = event.detail.get("count", 1)
            counts[rule] += count if isinstance(count, int) and count > 0 else 1
    return tuple(
        SeparationRow(rule=rule, count=n)
        for rule, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    )
