"""The report as flat CSV rows `section,group,key,value`, one figure per row.

Suppressed counts read `<K`, or `hidden` for a count of any size withheld so that a small one
cannot be worked out from the totals. Text that a spreadsheet would run as a formula (starting with
= + - @ or a tab) is prefixed with an apostrophe.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from broker.report.model import ROW_COLUMNS, Count, Report, iso

HEADER = ("section", "group", "key", "value")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

Row = tuple[str, str, str, str | int | float]


def _safe(value: str | int | float) -> str | int | float:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _count(count: Count, k: int) -> str | int:
    if count.value is not None:
        return count.value
    return f"<{k}" if count.small else "hidden"


def rows(report: Report) -> Iterator[Row]:
    k = report.min_count
    check = report.integrity
    yield ("report", "all", "facility", report.facility)
    yield ("report", "all", "since", iso(report.since))
    yield ("report", "all", "until", iso(report.until))
    yield ("report", "all", "generated_at", iso(report.generated_at))
    yield ("report", "all", "min_count", k)
    yield ("audit_log", "all", "verified", "true" if check.ok else "false")
    yield ("audit_log", "all", "entries_checked", check.entries_checked)
    yield ("audit_log", "all", "checkpoints_checked", check.checkpoints_checked)
    yield ("audit_log", "all", "unprotected_tail", check.unprotected_tail)
    for n, problem in enumerate(check.problems, start=1):
        yield ("audit_log", "problems", str(n), problem)
    t = report.totals
    yield ("totals", "all", "jobs", t.jobs)
    yield ("totals", "all", "shots", t.shots)
    yield ("totals", "all", "principals", t.principals)
    for state, n in t.by_state.items():
        yield ("totals", "state", state, n)
    for outcome, n in t.by_outcome.items():
        yield ("totals", "outcome", outcome, n)
    for table in report.served:
        for group_row in table.rows:
            for column in ROW_COLUMNS:
                yield (
                    f"served.{table.dimension}",
                    group_row.group,
                    column,
                    _count(group_row.cell(column), k),
                )
            yield (
                f"served.{table.dimension}",
                group_row.group,
                "groups_merged",
                group_row.groups_merged,
            )
    for stage, n in report.denials_by_stage().items():
        yield ("denials", "stage", stage, n)
    for d in report.denials:
        yield ("denials", f"{d.stage}:{d.rule}", "count", d.count)
        yield ("denials", f"{d.stage}:{d.rule}", "reason", d.reason)
    for quota in report.quota_refusals:
        yield ("quota_refusals", quota.scope, quota.limit, quota.count)
    for a in report.appraisals:
        yield ("attestation.appraisals", a.device, "passed", a.passed)
        yield ("attestation.appraisals", a.device, "failed", a.failed)
    for f in report.failures:
        yield ("attestation.failures", f.device, f.reason_code, f.count)
    for q in report.quarantines:
        group = f"{q.device}@{iso(q.started_at)}"
        yield ("attestation.quarantines", group, "device", q.device)
        yield ("attestation.quarantines", group, "started_at", iso(q.started_at))
        yield (
            "attestation.quarantines",
            group,
            "ended_at",
            iso(q.ended_at) if q.ended_at is not None else "",
        )
        yield ("attestation.quarantines", group, "outcome", q.outcome)
        seconds = q.duration_seconds
        yield (
            "attestation.quarantines",
            group,
            "duration_seconds",
            "" if seconds is None else round(seconds, 3),
        )
        yield ("attestation.quarantines", group, "reason", q.reason)
    for an in report.anomalies:
        yield ("anomalies", an.detector, an.device or "(none)", an.count)
    for w in report.queue_wait:
        yield ("queue_wait", w.group, "jobs", _count(w.jobs, k))
        median = "suppressed" if w.median_seconds is None else round(w.median_seconds, 3)
        yield ("queue_wait", w.group, "median_seconds", median)
        yield ("queue_wait", w.group, "groups_merged", w.groups_merged)
    for g in report.grants:
        for column in ("filed", "granted", "break_glass", "denied", "revoked", "expired"):
            yield ("access_requests", g.kind, column, getattr(g, column))
    for r in report.separation_refusals:
        yield ("separation_refusals", r.rule, "count", r.count)
    for n, note in enumerate(report.notes, start=1):
        yield ("notes", "all", str(n), note)


def render_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    for row in rows(report):
        writer.writerow([_safe(v) for v in row])
    return out.getvalue()
