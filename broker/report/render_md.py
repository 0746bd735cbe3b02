"""The report as Markdown for people who do not run the facility: one plain sentence per section
on what it shows, then tables."""

from __future__ import annotations

import re

from broker.report.model import (
    OTHER,
    OUTCOMES,
    Count,
    GroupRow,
    GroupTable,
    QueueWaitRow,
    Report,
    iso,
)

OUTCOME_HEADINGS = {
    "completed": "Completed",
    "failed": "Failed",
    "cancelled": "Cancelled",
    "denied": "Refused before running",
    "waiting": "Waiting or running",
}
STAGE_NAMES = {"submit": "at submission", "dispatch": "just before running"}
SCOPE_NAMES = {"principal": "one person", "project": "one project"}
LIMIT_NAMES = {"active_jobs": "jobs in progress at once", "shots_per_day": "shots per 24 hours"}
OUTCOME_NAMES = {
    "released": "released",
    "revoked": "device revoked",
    "ongoing": "still quarantined at the end of the period",
}

_SPECIAL = re.compile(r"([\\`*_{}\[\]<>|~&])")
_SPACE = re.compile(r"\s+")


def text(value: str) -> str:
    """Any stored text made inert in Markdown: one line, every markup character escaped."""
    return _SPECIAL.sub(r"\\\1", _SPACE.sub(" ", value).strip())


def number(value: int) -> str:
    return f"{value:,}"


def plural(n: int, one: str, many: str = "") -> str:
    return f"{number(n)} {one if n == 1 else many or one + 's'}"


def render_markdown(report: Report) -> str:
    lines: list[str] = [
        f"# Transparency report: {text(report.facility)}",
        "",
        f"Jobs submitted from {iso(report.since)} up to (not including) {iso(report.until)}, "
        f"and facility events in the same period. All times are UTC. "
        f"Made {iso(report.generated_at)} from the broker's own records.",
        "",
    ]
    lines += _integrity(report)
    lines += _totals(report)
    lines += _served(report)
    lines += _refusals(report)
    lines += _attestation(report)
    lines += _anomalies(report)
    lines += _queue_wait(report)
    lines += _access_requests(report)
    if report.notes:
        lines += ["## Notes", ""]
        lines += [f"- {text(note)}" for note in report.notes]
        lines.append("")
    return "\n".join(lines)


def _access_requests(report: Report) -> list[str]:
    lines = [
        "## 6. Access requests and grants",
        "",
        "Nobody raises their own access, and no operator raises anyone's directly: a higher "
        "tier, a role, a licence or a device above one's tier is requested, approved by a "
        "different principal with the approver role (break-glass: two security principals), "
        "and expires by itself. This counts each step by what was asked for, and the attempts "
        "the separation-of-duties rules refused. It never names who asked or decided.",
        "",
    ]
    if report.grants:
        lines += _table(
            [
                "Asked for",
                "Filed",
                "Granted",
                "of which break-glass",
                "Denied",
                "Revoked",
                "Expired",
            ],
            [
                [text(g.kind)]
                + [number(n) for n in (g.filed, g.granted, g.break_glass, g.denied)]
                + [number(g.revoked), number(g.expired)]
                for g in report.grants
            ],
        )
    else:
        lines += ["No access requests in this period.", ""]
    refused = sum(r.count for r in report.separation_refusals)
    lines += [f"Refusals under the separation-of-duties rules: {number(refused)}.", ""]
    if report.separation_refusals:
        lines += _table(
            ["Rule", "Refusals"],
            [[text(r.rule), number(r.count)] for r in report.separation_refusals],
        )
    return lines


def _table(headings: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(headings) + " |", "|" + "|".join("---" for _ in headings) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return [*out, ""]


def _integrity(report: Report) -> list[str]:
    check = report.integrity
    if check.ok:
        tail = (
            " Entries not yet covered by a signed checkpoint (the newest "
            f"{plural(check.unprotected_tail, 'entry', 'entries')}) are protected by the hash "
            "chain only."
            if check.unprotected_tail
            else ""
        )
        return [
            f"**Audit log:** verified. {plural(check.entries_checked, 'entry', 'entries')} "
            f"checked against {plural(check.checkpoints_checked, 'signed checkpoint')}.{tail}",
            "",
        ]
    lines = [
        "**Warning: the audit log did NOT verify.** Figures in sections 2 to 4 and the "
        "attribution of jobs to groups come from it and may have been tampered with:",
        "",
    ]
    lines += [f"- {text(problem)}" for problem in check.problems]
    return [*lines, ""]


def _totals(report: Report) -> list[str]:
    t = report.totals
    lines = [
        "## Totals",
        "",
        "These are the exact totals of jobs submitted in the period, for the whole facility.",
        "",
    ]
    headings = ["Jobs", "Shots", "People", *(OUTCOME_HEADINGS[o] for o in OUTCOMES)]
    values = [t.jobs, t.shots, t.principals, *(t.by_outcome[o] for o in OUTCOMES)]
    lines += _table(headings, [[number(v) for v in values]])
    states = ", ".join(f"{text(s)} {number(n)}" for s, n in t.by_state.items())
    lines += [f"Jobs by state: {states}.", ""]
    return lines


def _served(report: Report) -> list[str]:
    k = report.min_count
    lines = [
        "## 1. Who the facility serves",
        "",
        "This shows how many jobs were submitted and how many shots they asked for, grouped by "
        "the security tier of the device used, the project, the requester's institution and "
        "the requester's jurisdiction, with what became of the jobs.",
        "",
        f"{_protection(k)} A person with several jurisdictions counts in each, so those rows "
        "add up to more than the totals. Groups are taken as they were when each job was "
        "submitted. Requests refused at submission never became jobs; they are counted in "
        "section 2.",
        "",
    ]
    for table in report.served:
        lines += _group_table(table, k)
    return lines


def _protection(k: int) -> str:
    if k <= 1:
        return (
            "This report was made with no small-count protection: every group and count is shown."
        )
    return (
        f"To protect individuals, a group used by fewer than {k} people is not shown on its own "
        f'but merged into "{OTHER}" (and "{OTHER}" takes in the smallest remaining groups until '
        f"it holds at least {k} people). Any count from 1 to {k - 1} is shown as "
        f'"<{k}". Where such a count could be worked out from the other figures, another count, '
        'of any size, is shown as "hidden". The totals above are exact, so a table with one '
        "row hides nothing from them."
    )


def _count(count: Count, k: int) -> str:
    if count.value is not None:
        return number(count.value)
    return f"<{k}" if count.small else "hidden"


def _group_name(group: str, merged: int) -> str:
    if group == OTHER and merged:
        return f"{OTHER} ({merged} groups)" if merged != 1 else f"{OTHER} (1 group)"
    return text(group)


def _group_table(table: GroupTable, k: int) -> list[str]:
    lines = [f"### {table.title}", ""]
    if not table.rows:
        return [*lines, "No jobs.", ""]
    headings = ["Group", "People", "Jobs", "Shots", *(OUTCOME_HEADINGS[o] for o in OUTCOMES)]
    rows = [_group_row(row, k) for row in table.rows]
    return lines + _table(headings, rows)


def _group_row(row: GroupRow, k: int) -> list[str]:
    cells = ["principals", "jobs", "shots", *OUTCOMES]
    return [_group_name(row.group, row.groups_merged), *(_count(row.cell(c), k) for c in cells)]


def _refusals(report: Report) -> list[str]:
    lines = [
        "## 2. How often and why requests were refused",
        "",
        "This counts requests refused under the facility's access rules, either when they were "
        "submitted or just before an accepted job was due to run, and requests refused because "
        "a usage limit was reached.",
        "",
    ]
    stages = report.denials_by_stage()
    total = sum(stages.values())
    summary = ", ".join(f"{number(n)} {STAGE_NAMES.get(s, text(s))}" for s, n in stages.items())
    lines += [f"Refusals under the access rules: {number(total)} ({summary}).", ""]
    if report.denials:
        lines += _table(
            ["When", "Rule", "Refusals", "What the rule requires"],
            [
                [
                    STAGE_NAMES.get(d.stage, text(d.stage)),
                    text(d.rule),
                    number(d.count),
                    text(d.reason),
                ]
                for d in report.denials
            ],
        )
    quota = sum(q.count for q in report.quota_refusals)
    lines += [f"Refusals because a usage limit was reached: {number(quota)}.", ""]
    if report.quota_refusals:
        lines += _table(
            ["Limit for", "Limit on", "Refusals"],
            [
                [
                    SCOPE_NAMES.get(q.scope, text(q.scope)),
                    LIMIT_NAMES.get(q.limit, text(q.limit)),
                    number(q.count),
                ]
                for q in report.quota_refusals
            ],
        )
    return lines


def _attestation(report: Report) -> list[str]:
    lines = [
        "## 3. Device security checks",
        "",
        "This shows how often each device proved that it runs the expected, unaltered software "
        "and settings, which checks failed, and when a device was taken out of service "
        "(quarantined) until an operator released it.",
        "",
    ]
    if report.appraisals:
        lines += _table(
            ["Device", "Checks passed", "Checks failed"],
            [[text(a.device), number(a.passed), number(a.failed)] for a in report.appraisals],
        )
    else:
        lines += ["No device checks were recorded in this period.", ""]
    if report.failures:
        lines += _table(
            ["Device", "Reason code", "Failed checks"],
            [[text(f.device), text(f.reason_code), number(f.count)] for f in report.failures],
        )
    if report.quarantines:
        lines += _table(
            ["Device", "Quarantined", "Ended", "Outcome", "Duration", "Reason"],
            [
                [
                    text(q.device),
                    iso(q.started_at),
                    iso(q.ended_at) if q.ended_at is not None else "-",
                    OUTCOME_NAMES.get(q.outcome, text(q.outcome)),
                    duration(q.duration_seconds) if q.duration_seconds is not None else "-",
                    text(q.reason),
                ]
                for q in report.quarantines
            ],
        )
    else:
        lines += ["No device was quarantined in this period.", ""]
    return lines


def _anomalies(report: Report) -> list[str]:
    lines = [
        "## 4. Unusual activity flagged",
        "",
        "This counts the unusual patterns the broker's automatic monitors flagged, by monitor "
        "and by the device concerned.",
        "",
    ]
    if not report.anomalies:
        return [*lines, "Nothing was flagged in this period.", ""]
    return lines + _table(
        ["Monitor", "Device", "Times flagged"],
        [[text(a.detector), text(a.device) or "-", number(a.count)] for a in report.anomalies],
    )


def _queue_wait(report: Report) -> list[str]:
    k = report.min_count
    lines = [
        "## 5. Time waiting in the queue",
        "",
        "This shows the typical (median) time a job waited between being submitted and being "
        "sent to a device, by device tier, and how many jobs that figure is based on.",
        "",
        "Jobs never sent to a device are not included."
        + (
            f" Groups are merged and counts hidden as in section 1; a median based on fewer "
            f"than {k} jobs is not shown."
            if k > 1
            else ""
        ),
        "",
    ]
    if not report.queue_wait:
        return [*lines, "No job was sent to a device in this period.", ""]
    return lines + _table(
        ["Device tier", "Jobs", "Median wait"],
        [_wait_row(row, k) for row in report.queue_wait],
    )


def _wait_row(row: QueueWaitRow, k: int) -> list[str]:
    wait = "not shown" if row.median_seconds is None else duration(row.median_seconds)
    return [_group_name(row.group, row.groups_merged), _count(row.jobs, k), wait]


def duration(seconds: float) -> str:
    """A duration a person reads at a glance: 0.42 s, 12 s, 3 min 5 s, 2 h 10 min, 3 d 4 h."""
    if seconds < 1:
        return f"{seconds:.2f} s"
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    if whole < 86_400:
        return f"{whole // 3600} h {whole % 3600 // 60} min"
    return f"{whole // 86_400} d {whole % 86_400 // 3600} h"
