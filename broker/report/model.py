"""The transparency report as plain typed data: what the renderers print, nothing more.

Small counts are suppressed before they get here: a suppressed `Count` carries no value at all,
so no renderer can print one by mistake.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

# Job states in the order the report lists them, and the five outcomes it groups them into.
JOB_STATES = ("QUEUED", "DISPATCHED", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "DENIED")
OUTCOMES = ("completed", "failed", "cancelled", "denied", "waiting")
OUTCOME_OF_STATE = {
    "COMPLETED": "completed",
    "FAILED": "failed",
    "CANCELLED": "cancelled",
    "DENIED": "denied",
    # Not finished when the report was made: queued, or handed to a device and running.
    "QUEUED": "waiting",
    "DISPATCHED": "waiting",
    "RUNNING": "waiting",
}
# The count columns of a "who the facility serves" row, in print order.
ROW_COLUMNS = ("principals", "jobs", "shots", *OUTCOMES)
# Label of the row that small groups are merged into.
OTHER = "other"


def iso(epoch: float) -> str:
    """Epoch seconds as ISO 8601 UTC to the second, e.g. 2026-01-31T09:00:00Z."""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Count:
    """A published count: `value` is None when it was suppressed, either as too small to show
    (`small`) or because it would let a reader work a small count out from the totals."""

    value: int | None
    small: bool = False

    @property
    def suppressed(self) -> bool:
        return self.value is None

    @property
    def why(self) -> str | None:
        """None (shown), "below_min_count" or "complementary"."""
        if self.value is not None:
            return None
        return "below_min_count" if self.small else "complementary"


def published(value: int, hidden: bool, min_count: int) -> Count:
    """`value` as published: hidden, and marked small only if it really is below min_count."""
    if not hidden:
        return Count(value)
    return Count(None, small=0 < value < min_count)


@dataclass(frozen=True, kw_only=True, slots=True)
class GroupRow:
    """One group of a "who the facility serves" table (or the merged "other" row)."""

    group: str
    groups_merged: int  # how many groups were merged into this row (0 for a real group)
    cells: dict[str, Count]  # ROW_COLUMNS -> count

    def cell(self, column: str) -> Count:
        return self.cells[column]


@dataclass(frozen=True, kw_only=True, slots=True)
class GroupTable:
    dimension: str  # device_tier | project | affiliation | jurisdiction
    title: str
    rows: tuple[GroupRow, ...]
    # True when one job can count in several rows (a principal in several jurisdictions).
    overlapping: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class Totals:
    """Exact facility-wide totals for jobs submitted in the period."""

    jobs: int
    shots: int
    principals: int
    by_state: dict[str, int]  # every JOB_STATES entry, zeros included
    by_outcome: dict[str, int]  # every OUTCOMES entry, zeros included


@dataclass(frozen=True, kw_only=True, slots=True)
class DenialRow:
    stage: str  # submit | dispatch
    rule: str
    count: int
    reason: str  # what the rule means, from the policy set (never a requester's details)


@dataclass(frozen=True, kw_only=True, slots=True)
class QuotaRow:
    scope: str  # principal | project
    limit: str  # active_jobs | shots_per_day
    count: int


@dataclass(frozen=True, kw_only=True, slots=True)
class GrantRow:
    """Access requests of one elevation kind (tier, role, licence, device) in the period."""

    kind: str
    filed: int
    granted: int
    break_glass: int  # of those granted, on the approvals of two security principals
    denied: int
    revoked: int
    expired: int


@dataclass(frozen=True, kw_only=True, slots=True)
class SeparationRow:
    rule: str  # access.self-edit, access.elevation, access.own-request, ...
    count: int


@dataclass(frozen=True, kw_only=True, slots=True)
class AppraisalRow:
    device: str
    passed: int
    failed: int


@dataclass(frozen=True, kw_only=True, slots=True)
class FailureRow:
    device: str
    reason_code: str
    count: int


@dataclass(frozen=True, kw_only=True, slots=True)
class QuarantineRow:
    device: str
    started_at: float
    ended_at: float | None  # None: still quarantined at the end of the period
    outcome: str  # released | revoked | ongoing
    reason: str

    @property
    def duration_seconds(self) -> float | None:
        return None if self.ended_at is None else self.ended_at - self.started_at


@dataclass(frozen=True, kw_only=True, slots=True)
class AnomalyRow:
    detector: str
    device: str  # "" when the finding names no device
    count: int


@dataclass(frozen=True, kw_only=True, slots=True)
class QueueWaitRow:
    group: str
    groups_merged: int
    jobs: Count  # jobs the median is based on
    median_seconds: float | None  # None when suppressed (based on too few jobs)


@dataclass(frozen=True, kw_only=True, slots=True)
class Integrity:
    """The audit log check the report's audit-derived figures stand on."""

    ok: bool
    entries_checked: int
    checkpoints_checked: int
    verified_through: int
    unprotected_tail: int
    problems: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class Report:
    facility: str
    store: str  # sqlite | postgresql (never the URL: it may hold a password)
    since: float
    until: float
    generated_at: float
    min_count: int
    integrity: Integrity
    totals: Totals
    served: tuple[GroupTable, ...]
    denials: tuple[DenialRow, ...]
    quota_refusals: tuple[QuotaRow, ...]
    appraisals: tuple[AppraisalRow, ...]
    failures: tuple[FailureRow, ...]
    quarantines: tuple[QuarantineRow, ...]
    anomalies: tuple[AnomalyRow, ...]
    queue_wait: tuple[QueueWaitRow, ...]
    grants: tuple[GrantRow, ...] = ()
    separation_refusals: tuple[SeparationRow, ...] = ()
    notes: tuple[str, ...] = field(default=())

    def denials_by_stage(self) -> dict[str, int]:
        stages = {"submit": 0, "dispatch": 0}
        for row in self.denials:
            stages[row.stage] = stages.get(row.stage, 0) + row.count
        return stages
