"""From the facts read out of the store to the `Report`: counting, grouping, suppression."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from broker.report.grants import grant_rows, separation_rows
from broker.report.model import (
    JOB_STATES,
    OTHER,
    OUTCOME_OF_STATE,
    OUTCOMES,
    AnomalyRow,
    AppraisalRow,
    DenialRow,
    FailureRow,
    GroupRow,
    GroupTable,
    Integrity,
    QuarantineRow,
    QueueWaitRow,
    QuotaRow,
    Report,
    Totals,
    published,
)
from broker.report.privacy import Group, Relation, group_jobs, merge_small, suppress
from broker.report.reasons import RuleReasons
from broker.report.source import Facts, JobFact, PrincipalFacts
from broker.report.stats import median, queue_wait

UNKNOWN_DEVICE = "(unknown device)"
UNKNOWN_PRINCIPAL = "(unknown principal)"
NOT_RECORDED = "(not recorded)"
NO_PROJECT = "(no project)"
UNREGISTERED = "(unregistered device)"
STAGES = ("submit", "dispatch")

# jobs = completed + failed + cancelled + denied + waiting, in every row.
_ROW_RELATIONS = (Relation(total="jobs", parts=OUTCOMES),)


@dataclass(frozen=True, kw_only=True, slots=True)
class Settings:
    """What the report is asked for, beyond the facts."""

    facility: str
    store: str
    min_count: int
    tiers: Sequence[str] = ()  # lowest to highest, to order the tier rows
    generated_at: float | None = None
    notes: Sequence[str] = ()  # said by the caller, printed after the report's own


@dataclass(frozen=True, kw_only=True, slots=True)
class _Attributed:
    """A job with the attributes of its owner and device when it was submitted."""

    job: JobFact
    tier: str
    principal: PrincipalFacts | None


def build_report(facts: Facts, reasons: RuleReasons, settings: Settings) -> Report:
    notes: list[str] = []
    jobs = _attribute(facts, notes)
    k = settings.min_count
    tier_rank = {tier: rank for rank, tier in enumerate(settings.tiers)}

    def by_tier(row: Group) -> tuple[int, int, str]:
        return (row.key == OTHER, tier_rank.get(row.key, len(tier_rank)), row.key)

    served = (
        _table(
            "device_tier",
            "By device tier",
            jobs,
            ((a.tier,) for a in jobs),
            k,
            order=by_tier,
        ),
        _table("project", "By project", jobs, ((a.job.project or NO_PROJECT,) for a in jobs), k),
        _table("affiliation", "By affiliation", jobs, (_affiliation(a) for a in jobs), k),
        _table(
            "jurisdiction",
            "By jurisdiction",
            jobs,
            (_jurisdictions(a) for a in jobs),
            k,
            overlapping=True,
        ),
    )
    if reasons.problem:
        notes.append(f"Rule descriptions are missing: {reasons.problem}.")
    if facts.unreadable_principal_docs:
        notes.append(
            f"{facts.unreadable_principal_docs} principal record(s) in the audit log could not "
            "be read and were skipped."
        )
    registered = facts.registered_devices()
    return Report(
        facility=settings.facility,
        store=settings.store,
        since=facts.since,
        until=facts.until,
        generated_at=settings.generated_at if settings.generated_at is not None else time.time(),
        min_count=k,
        integrity=facts.integrity or _unchecked(),
        totals=_totals(facts.jobs),
        served=served,
        denials=_denials(facts, reasons),
        quota_refusals=_quota(facts),
        appraisals=_appraisals(facts, registered),
        failures=_failures(facts, registered),
        quarantines=quarantines(facts),
        anomalies=_anomalies(facts, registered),
        queue_wait=_queue_wait(facts, jobs, k, by_tier),
        grants=grant_rows(facts),
        separation_refusals=separation_rows(facts),
        notes=(*notes, *settings.notes),
    )


def _unchecked() -> Integrity:
    return Integrity(
        ok=False,
        entries_checked=0,
        checkpoints_checked=0,
        verified_through=0,
        unprotected_tail=0,
        problems=("the audit log was not checked",),
    )


# ---------------------------------------------------------------- who the facility serves


def _attribute(facts: Facts, notes: list[str]) -> list[_Attributed]:
    current_tier = current_principal = unknown_device = unknown_principal = 0
    found: list[_Attributed] = []
    for job in facts.jobs:
        known, tier = facts.tier_history.at(job.device_id, job.created_at)
        if not (known and tier):
            tier = facts.tiers_now.get(job.device_id)
            if tier is None:
                unknown_device += 1
                tier = UNKNOWN_DEVICE
            else:
                current_tier += 1
        known, principal = facts.principal_history.at(job.owner, job.created_at)
        if not (known and principal is not None):
            principal = facts.principals_now.get(job.owner)
            if principal is None:
                unknown_principal += 1
            else:
                current_principal += 1
        found.append(_Attributed(job=job, tier=tier, principal=principal))
    if current_tier:
        notes.append(
            f"For {current_tier} job(s) the audit log holds no registration of the device from "
            "before the job; its current tier was used."
        )
    if current_principal:
        notes.append(
            f"For {current_principal} job(s) the audit log holds no record of the owner from "
            "before the job; the owner's current affiliation and jurisdictions were used."
        )
    if unknown_device:
        notes.append(f"{unknown_device} job(s) name a device with no known tier.")
    if unknown_principal:
        notes.append(f"{unknown_principal} job(s) have an owner with no principal record.")
    return found


def _affiliation(job: _Attributed) -> tuple[str]:
    if job.principal is None:
        return (UNKNOWN_PRINCIPAL,)
    return (job.principal.affiliation or NOT_RECORDED,)


def _jurisdictions(job: _Attributed) -> tuple[str, ...]:
    if job.principal is None:
        return (UNKNOWN_PRINCIPAL,)
    return tuple(sorted(job.principal.jurisdictions)) or (NOT_RECORDED,)


def _table(
    dimension: str,
    title: str,
    jobs: Sequence[_Attributed],
    keys: Iterable[tuple[str, ...]],
    min_count: int,
    *,
    overlapping: bool = False,
    order: Callable[[Group], tuple[int, int, str]] | None = None,
) -> GroupTable:
    memberships = ((i, a.job.owner, ks) for i, (a, ks) in enumerate(zip(jobs, keys, strict=True)))
    groups = merge_small(group_jobs(memberships), min_count)
    if order is not None:
        groups.sort(key=order)
    raw = [_row_counts(g, jobs) for g in groups]
    hidden = suppress(
        raw,
        min_count,
        row_relations=_ROW_RELATIONS,
        # Rows that split the jobs add up to the exact totals; overlapping rows do not.
        additive_columns=() if overlapping else ("jobs", "shots", *OUTCOMES),
    )
    rows = tuple(
        GroupRow(
            group=g.key,
            groups_merged=g.groups_merged,
            cells={c: published(v, c in mask, min_count) for c, v in counts.items()},
        )
        for g, counts, mask in zip(groups, raw, hidden, strict=True)
    )
    return GroupTable(dimension=dimension, title=title, rows=rows, overlapping=overlapping)


def _row_counts(group: Group, jobs: Sequence[_Attributed]) -> dict[str, int]:
    members = [jobs[i].job for i in group.jobs]
    outcomes = Counter(OUTCOME_OF_STATE.get(j.state, "waiting") for j in members)
    return {
        "principals": len(group.owners),
        "jobs": len(members),
        "shots": sum(j.shots for j in members),
        **{o: outcomes[o] for o in OUTCOMES},
    }


def _totals(jobs: Sequence[JobFact]) -> Totals:
    states = Counter(j.state for j in jobs)
    outcomes = Counter(OUTCOME_OF_STATE.get(j.state, "waiting") for j in jobs)
    by_state = {s: states[s] for s in JOB_STATES}
    # A state this code does not know (a newer broker) is still counted, under its own name.
    by_state.update({s: n for s, n in states.items() if s not in by_state})
    return Totals(
        jobs=len(jobs),
        shots=sum(j.shots for j in jobs),
        principals=len({j.owner for j in jobs}),
        by_state=by_state,
        by_outcome={o: outcomes[o] for o in OUTCOMES},
    )


# ---------------------------------------------------------------- refusals


def _events(facts: Facts, kind: str) -> Iterable[tuple[str, dict[str, object]]]:
    for event in facts.period_events:
        if event.kind == kind:
            yield event.subject, dict(event.detail)


def _denials(facts: Facts, reasons: RuleReasons) -> tuple[DenialRow, ...]:
    counts = Counter(
        (_text(d.get("stage"), "unknown"), _text(d.get("rule"), "(none)"))
        for _subject, d in _events(facts, "clearance.denied")
    )
    stage_rank = {s: i for i, s in enumerate(STAGES)}
    ordered = sorted(counts.items(), key=lambda kv: (stage_rank.get(kv[0][0], 9), -kv[1], kv[0]))
    return tuple(
        DenialRow(stage=stage, rule=rule, count=n, reason=reasons.describe(rule))
        for (stage, rule), n in ordered
    )


def _quota(facts: Facts) -> tuple[QuotaRow, ...]:
    counts = Counter(
        (_text(d.get("scope"), "unknown"), _text(d.get("limit"), "unknown"))
        for _subject, d in _events(facts, "quota.exceeded")
    )
    return tuple(
        QuotaRow(scope=scope, limit=limit, count=n) for (scope, limit), n in sorted(counts.items())
    )


# ---------------------------------------------------------------- devices


def _device_label(device: str, registered: set[str]) -> str:
    # Ids of unregistered devices are chosen by whoever connected: never print them.
    return device if device in registered else UNREGISTERED


def _unknown_device_hellos(facts: Facts) -> Iterable[tuple[str, int]]:
    """Hellos for unregistered devices, audited in aggregate (`link.refused`, reason
    `unknown_device`, with the window's count): (device, count) per entry."""
    for subject, detail in _events(facts, "link.refused"):
        count = detail.get("count")
        if detail.get("reason") == "unknown_device" and isinstance(count, int) and count > 0:
            yield subject, count


def _appraisals(facts: Facts, registered: set[str]) -> tuple[AppraisalRow, ...]:
    passed: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    for event in facts.period_events:
        if event.kind == "attestation.passed":
            passed[_device_label(event.subject, registered)] += 1
        elif event.kind == "attestation.failed":
            failed[_device_label(event.subject, registered)] += 1
    for subject, count in _unknown_device_hellos(facts):
        failed[_device_label(subject, registered)] += count
    return tuple(
        AppraisalRow(device=d, passed=passed[d], failed=failed[d])
        for d in sorted(set(passed) | set(failed))
    )


def _failures(facts: Facts, registered: set[str]) -> tuple[FailureRow, ...]:
    counts: Counter[tuple[str, str]] = Counter()
    for subject, detail in _events(facts, "attestation.failed"):
        device = _device_label(subject, registered)
        for code in reason_codes(detail.get("reasons")):
            counts[(device, code)] += 1
    for subject, count in _unknown_device_hellos(facts):
        counts[(_device_label(subject, registered), "UNKNOWN_DEVICE")] += count
    return tuple(
        FailureRow(device=device, reason_code=code, count=n)
        for (device, code), n in sorted(counts.items(), key=lambda kv: (kv[0][0], -kv[1], kv[0]))
    )


def reason_codes(reasons: object) -> list[str]:
    """Reason codes of an `attestation.failed` entry: its `reasons` are "CODE: detail" strings
    (or bare codes for an unregistered device). Each code counts once per entry."""
    codes: list[str] = []
    if isinstance(reasons, list):
        for item in reasons:
            code = item.partition(":")[0].strip() if isinstance(item, str) else ""
            code = code or "(unspecified)"
            if code not in codes:
                codes.append(code)
    return codes or ["(none given)"]


def quarantines(facts: Facts) -> tuple[QuarantineRow, ...]:
    """Quarantines overlapping the period, from the device status entries before its end."""
    open_: dict[str, tuple[float, str]] = {}
    found: list[QuarantineRow] = []
    for event in sorted(facts.status_events, key=lambda e: e.at):
        device = event.subject
        if event.kind == "device.quarantined":
            if device not in open_:
                open_[device] = (event.at, _text(event.detail.get("reason"), ""))
            continue
        started = open_.pop(device, None)
        if started is None:
            continue
        outcome = "released" if event.kind == "device.released" else "revoked"
        if event.at >= facts.since:
            found.append(
                QuarantineRow(
                    device=device,
                    started_at=started[0],
                    ended_at=event.at,
                    outcome=outcome,
                    reason=started[1],
                )
            )
    found.extend(
        QuarantineRow(device=device, started_at=at, ended_at=None, outcome="ongoing", reason=why)
        for device, (at, why) in open_.items()
    )
    return tuple(sorted(found, key=lambda q: (q.started_at, q.device)))


def _anomalies(facts: Facts, registered: set[str]) -> tuple[AnomalyRow, ...]:
    counts: Counter[tuple[str, str]] = Counter()
    for _subject, detail in _events(facts, "anomaly.raised"):
        detector = _text(detail.get("detector"), "(unspecified)")
        device = _text(detail.get("device"), "")
        counts[(detector, _device_label(device, registered) if device else "")] += 1
    return tuple(
        AnomalyRow(detector=detector, device=device, count=n)
        for (detector, device), n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    )


# ---------------------------------------------------------------- queue wait


def _queue_wait(
    facts: Facts,
    jobs: Sequence[_Attributed],
    min_count: int,
    order: Callable[[Group], tuple[int, int, str]],
) -> tuple[QueueWaitRow, ...]:
    waits: list[float] = []
    memberships: list[tuple[int, str, tuple[str]]] = []
    for attributed in jobs:
        job = attributed.job
        wait = queue_wait(
            created_at=job.created_at,
            dispatched_at=job.dispatched_at,
            attempts=job.attempts,
            first_dispatch_at=facts.first_dispatch.get(job.job_id),
        )
        if wait is not None:
            memberships.append((len(waits), job.owner, (attributed.tier,)))
            waits.append(wait)
    groups = sorted(merge_small(group_jobs(memberships), min_count), key=order)
    hidden = suppress(
        [{"jobs": len(g.jobs)} for g in groups], min_count, additive_columns=("jobs",)
    )
    return tuple(
        QueueWaitRow(
            group=g.key,
            groups_merged=g.groups_merged,
            jobs=published(len(g.jobs), bool(mask), min_count),
            median_seconds=None if mask else median(waits[i] for i in g.jobs),
        )
        for g, mask in zip(groups, hidden, strict=True)
    )


def _text(value: object, default: str) -> str:
    return value if isinstance(value, str) and value else default
