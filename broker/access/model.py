"""Who may use the facility: principals, projects, roles and quotas. Plain data.

Operators change these at run time through the access API; every change is versioned
(compare-and-set) and audited in the same transaction. The facility file only seeds them.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

DAY_SECONDS = 86_400.0


class AccessError(ValueError):
    """An access record is malformed or inconsistent; the message names the field."""


class Role(enum.Enum):
    """What a principal may do; enforced per RPC at the edge (`broker.access.roles`)."""

    RESEARCHER = "researcher"  # submits jobs and reads their own
    OPERATOR = "operator"  # manages devices, principals, projects and other people's jobs
    SECURITY = "security"  # reads the audit log and attestation history; revokes
    APPROVER = "approver"  # approves or denies other principals' access requests
    SCRAPER = "scraper"  # reads /metrics (a monitoring system's identity), nothing else


class RecordKind(enum.Enum):
    PRINCIPAL = "principal"
    PROJECT = "project"
    DEVICE = "device"
    CREDENTIAL = "credential"  # a client certificate, by serial: recorded, maybe revoked


_MAX_NAME = 128


def _check_name(kind: str, name: str) -> None:
    """A name becomes a certificate identity, an audit actor and a Cedar entity id: it must
    be printable, without surrounding blanks, and short."""
    if not name or len(name) > _MAX_NAME or not name.isprintable() or name != name.strip():
        raise AccessError(
            f"{kind} name {name!r} must be 1-{_MAX_NAME} printable characters without "
            "surrounding spaces"
        )


def parse_roles(names: Iterable[str], where: str) -> frozenset[Role]:
    """Role names as roles; AccessError naming the unknown one and the known ones."""
    try:
        return frozenset(Role(name) for name in names)
    except ValueError as exc:
        known = ", ".join(r.value for r in Role)
        raise AccessError(f"{where}: {exc}; roles are {known}") from exc


@dataclass(frozen=True, kw_only=True, slots=True)
class Quota:
    """Limits per principal or per project; 0 means no limit."""

    max_active_jobs: int = 0  # queued, dispatched or running at once
    max_shots_per_day: int = 0  # shots submitted in any rolling 24 hours

    def __post_init__(self) -> None:
        if self.max_active_jobs < 0 or self.max_shots_per_day < 0:
            raise AccessError("quota limits must be 0 (no limit) or more")

    @property
    def limited(self) -> bool:
        return bool(self.max_active_jobs or self.max_shots_per_day)


@dataclass(frozen=True, kw_only=True, slots=True)
class Principal:
    """A person or service, named by the common name of their client certificate.

    This is the one model of a principal: the TOML seed (`broker.access.facility`), the stored
    JSON document (`broker.access.documents`), the protobuf message (`broker.grpc.codec.access`)
    and the Cedar entity (`broker.access.clearance`) are all made from or into it, and it checks
    itself here, once, whichever form it came from. Whether its tier exists is the facility's
    to say: `check_tier`.
    """

    name: str
    tier: str
    roles: frozenset[Role]
    clearance_expires_at: float | None = None
    affiliation: str = ""
    nationality: str = ""
    jurisdictions: frozenset[str] = frozenset()
    projects: tuple[str, ...] = ()
    # Training id -> expiry (epoch seconds) of the completed course.
    training: Mapping[str, float] = field(default_factory=dict)
    licences: frozenset[str] = frozenset()
    quota: Quota = Quota()

    def __post_init__(self) -> None:
        _check_name("principal", self.name)
        where = f"principal {self.name!r}"
        if not self.tier:
            raise AccessError(f"{where}: a tier is required")
        if not self.roles:
            raise AccessError(f"{where}: give at least one role: researcher, operator, security")
        if len(set(self.projects)) != len(self.projects):
            raise AccessError(f"{where}: a project is listed twice")
        if any(
            not isinstance(v, int | float) or isinstance(v, bool) for v in self.training.values()
        ):
            raise AccessError(f"{where}: training must map course names to expiry times")

    def check_tier(self, tiers: Sequence[str]) -> Principal:
        """This principal, if its tier is one of the facility's; AccessError otherwise."""
        if self.tier not in tiers:
            raise AccessError(
                f"principal {self.name!r}: tier {self.tier!r} is not one of {', '.join(tiers)}"
            )
        return self


@dataclass(frozen=True, kw_only=True, slots=True)
class Project:
    """A body of work that principals belong to; the unit of reservations and fair share."""

    name: str
    description: str = ""
    weight: int = 1  # share of device time relative to other projects
    quota: Quota = Quota()

    def __post_init__(self) -> None:
        _check_name("project", self.name)
        if self.weight < 1:
            raise AccessError(f"project {self.name!r}: weight must be at least 1")


@dataclass(frozen=True, kw_only=True, slots=True)
class AccessRecord:
    """One stored access document with its compare-and-set version and who changed it last."""

    kind: RecordKind
    name: str
    doc: Mapping[str, Any]
    version: int
    updated_at: float
    updated_by: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Usage:
    """What counts against a quota right now."""

    active_jobs: int
    shots_last_day: int


@dataclass(frozen=True, kw_only=True, slots=True)
class QuotaCheck:
    """Limits the store enforces atomically with a job insert (the job itself included)."""

    owner: str
    owner_quota: Quota
    project: str
    project_quota: Quota
    since: float  # start of the rolling day


class QuotaExceeded(Exception):
    """A job would exceed a quota; nothing was written."""

    def __init__(self, scope: str, name: str, what: str, limit: int, used: int) -> None:
        super().__init__(f"{scope} {name!r}: {what} limit {limit} reached ({used} in use)")
        self.scope = scope
        self.name = name
        self.what = what
        self.limit = limit
        self.used = used


def check_quota(scope: str, name: str, quota: Quota, usage: Usage, *, shots: int) -> None:
    """Raise QuotaExceeded if `usage` (which includes the new job) is over `quota`."""
    if quota.max_active_jobs and usage.active_jobs > quota.max_active_jobs:
        raise QuotaExceeded(
            scope, name, "active jobs", quota.max_active_jobs, usage.active_jobs - 1
        )
    if quota.max_shots_per_day and usage.shots_last_day > quota.max_shots_per_day:
        raise QuotaExceeded(
            scope,
            name,
            "shots per 24 hours",
            quota.max_shots_per_day,
            usage.shots_last_day - shots,
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class Credential:
    """A client certificate the broker knows of, by serial (lower-case hex, no 0x).

    Recorded when an operator issues it; revoked for good (a revocation is never undone). A
    serial may be revoked without having been recorded: then only the revocation is known.
    """

    serial: str
    principal: str = ""
    fingerprint: str = ""
    not_before: float | None = None
    not_after: float | None = None
    recorded_at: float | None = None
    recorded_by: str = ""
    revoked_at: float | None = None
    revoked_by: str = ""
    revocation_reason: str = ""

    def __post_init__(self) -> None:
        if not self.serial or any(c not in "0123456789abcdef" for c in self.serial):
            raise AccessError(f"credential serial {self.serial!r} must be lower-case hex")

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None
