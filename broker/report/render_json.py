"""The report as JSON for machines: stable keys, numbers as numbers, times ISO 8601 UTC.

A count that may be suppressed is always an object, `{"value": 12, "suppressed": false,
"why": null}` or `{"value": null, "suppressed": true, "why": "below_min_count"}` ("complementary"
when the count may be of any size but was hidden so that a small one cannot be worked out from
the totals), so a consumer never mistakes a hidden count for zero.
"""

from __future__ import annotations

import json
from typing import Any

from broker.report.model import ROW_COLUMNS, Count, GroupTable, Report, iso

SCHEMA_VERSION = 1


def _count(count: Count) -> dict[str, Any]:
    return {"value": count.value, "suppressed": count.suppressed, "why": count.why}


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _table(table: GroupTable) -> dict[str, Any]:
    return {
        "title": table.title,
        "overlapping": table.overlapping,
        "rows": [
            {
                "group": row.group,
                "groups_merged": row.groups_merged,
                **{c: _count(row.cell(c)) for c in ROW_COLUMNS},
            }
            for row in table.rows
        ],
    }


def report_to_dict(report: Report) -> dict[str, Any]:
    check = report.integrity
    stages = report.denials_by_stage()
    return {
        "schema_version": SCHEMA_VERSION,
        "facility": report.facility,
        "store": report.store,
        "period": {"since": iso(report.since), "until": iso(report.until)},
        "generated_at": iso(report.generated_at),
        "min_count": report.min_count,
        "audit_log": {
            "verified": check.ok,
            "entries_checked": check.entries_checked,
            "checkpoints_checked": check.checkpoints_checked,
            "verified_through": check.verified_through,
            "unprotected_tail": check.unprotected_tail,
            "problems": list(check.problems),
        },
        "totals": {
            "jobs": report.totals.jobs,
            "shots": report.totals.shots,
            "principals": report.totals.principals,
            "by_state": dict(report.totals.by_state),
            "by_outcome": dict(report.totals.by_outcome),
        },
        "served": {table.dimension: _table(table) for table in report.served},
        "denials": {
            "total": sum(stages.values()),
            "by_stage": stages,
            "rules": [
                {"stage": d.stage, "rule": d.rule, "count": d.count, "reason": d.reason}
                for d in report.denials
            ],
        },
        "quota_refusals": {
            "total": sum(q.count for q in report.quota_refusals),
            "rows": [
                {"scope": q.scope, "limit": q.limit, "count": q.count}
                for q in report.quota_refusals
            ],
        },
        "attestation": {
            "appraisals": [
                {"device": a.device, "passed": a.passed, "failed": a.failed}
                for a in report.appraisals
            ],
            "failures": [
                {"device": f.device, "reason_code": f.reason_code, "count": f.count}
                for f in report.failures
            ],
            "quarantines": [
                {
                    "device": q.device,
                    "started_at": iso(q.started_at),
                    "ended_at": iso(q.ended_at) if q.ended_at is not None else None,
                    "outcome": q.outcome,
                    "duration_seconds": _seconds(q.duration_seconds),
                    "reason": q.reason,
                }
                for q in report.quarantines
            ],
        },
        "anomalies": {
            "total": sum(a.count for a in report.anomalies),
            "rows": [
                {"detector": a.detector, "device": a.device or None, "count": a.count}
                for a in report.anomalies
            ],
        },
        "queue_wait": {
            "rows": [
                {
                    "group": w.group,
                    "groups_merged": w.groups_merged,
                    "jobs": _count(w.jobs),
                    "median_seconds": {
                        "value": _seconds(w.median_seconds),
                        "suppressed": w.median_seconds is None,
                    },
                }
                for w in report.queue_wait
            ]
        },
        "access_requests": {
            "by_kind": [
                {
                    "kind": g.kind,
                    "filed": g.filed,
                    "granted": g.granted,
                    "break_glass": g.break_glass,
                    "denied": g.denied,
                    "revoked": g.revoked,
                    "expired": g.expired,
                }
                for g in report.grants
            ],
            "separation_refusals": [
                {"rule": r.rule, "count": r.count} for r in report.separation_refusals
            ],
        },
        "notes": list(report.notes),
    }


def render_json(report: Report) -> str:
    return json.dumps(report_to_dict(report), indent=2, ensure_ascii=False) + "\n"
