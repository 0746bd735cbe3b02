"""Who may use the facility: principals, projects, roles and quotas. Plain data.

Operators change these at run time through the access API; every change is versioned
(compare-and-set) and audited in the same transaction. The facility file only seeds them.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
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
    ACCESS_REQUEST = "access_request"  # a just-in-time elevation, by request id, and its grant


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


class Elevation(enum.Enum):
    """What an access request asks for, above the subject's own record."""

    TIER = "tier"  # value: a higher clearance tier
    ROLE = "role"  # value: operator, security or approver
    LICENCE = "licence"  # value: an export licence, e.g. EAR-4A906
    DEVICE = "device"  # value: one device id above the subject's tier


class RequestState(enum.Enum):
    """Where an access request is; only PENDING and GRANTED are open."""

    PENDING = "pending"  # waiting for its approval(s)
    GRANTED = "granted"  # approved; in force until expires_at
    DENIED = "denied"  # refused by a decider
    EXPIRED = "expired"  # its grant ran out (sunset), or it waited undecided past PENDING_SECONDS
    REVOKED = "revoked"  # its grant was withdrawn before it ran out


# A request waits this long for its decision at most: one approved weeks later would grant on
# a reason, and to a person, nobody looked at again. Past it the requester files a new one.
PENDING_SECONDS = 14 * 86_400.0

# Roles an edit cannot add: each widens what its holder sees or does (the scraper reads metrics
# that name every device, hidden ones too), so each comes through an access request.
GRANTABLE_ROLES = frozenset({Role.OPERATOR, Role.SECURITY, Role.APPROVER, Role.SCRAPER})


@dataclass(frozen=True, kw_only=True, slots=True)
class Approval:
    approver: str
    at: float
    reason: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class AccessRequest:
    """A request for one elevation of one principal and, once approved, its grant.

    State changes happen only through the methods below, each returning a new request; who may
    make them is decided in `broker.access.request_rules`.
    """

    request_id: str
    principal: str  # who receives the grant
    requested_by: str
    kind: Elevation
    value: str
    duration_seconds: float
    reason: str
    created_at: float
    break_glass: bool = False
    state: RequestState = RequestState.PENDING
    approvals: tuple[Approval, ...] = ()
    decided_at: float | None = None
    expires_at: float | None = None
    decided_by: str = ""
    decision_reason: str = ""

    def __post_init__(self) -> None:
        where = f"access request {self.request_id!r}"
        if not self.value or not self.value.isprintable() or len(self.value) > _MAX_NAME:
            raise AccessError(f"{where}: name the {self.kind.value} asked for")
        if self.kind is Elevation.ROLE and self.value not in {r.value for r in GRANTABLE_ROLES}:
            roles = ", ".join(sorted(r.value for r in GRANTABLE_ROLES))
            raise AccessError(f"{where}: a role request is for one of {roles}")
        if not self.duration_seconds > 0:
            raise AccessError(f"{where}: the duration must be positive")
        if self.state is RequestState.GRANTED and self.expires_at is None:
            raise AccessError(f"{where}: a grant needs its expiry")

    @property
    def approvals_needed(self) -> int:
        """Break-glass takes two different security principals; anything else one approver."""
        return 2 if self.break_glass else 1

    @property
    def open(self) -> bool:
        return self.state in (RequestState.PENDING, RequestState.GRANTED)

    @property
    def pending_until(self) -> float:
        return self.created_at + PENDING_SECONDS

    def waiting(self, now: float) -> bool:
        """Pending and not yet past its time to be decided (a lapsed request, like an expired
        grant, stops counting at its own time, before the tick writes it EXPIRED)."""
        return self.state is RequestState.PENDING and now < self.pending_until

    def in_force(self, now: float) -> bool:
        """Granted and not yet expired, by the grant's own time: every check stops counting it
        the second it expires, before the broker's tick writes it as EXPIRED."""
        return (
            self.state is RequestState.GRANTED
            and self.expires_at is not None
            and now < self.expires_at
        )

    def approved(self, approver: str, at: float, reason: str) -> AccessRequest:
        """With one more approval; GRANTED from the last required one, for its duration."""
        self._require(RequestState.PENDING, "approved")
        approvals = (*self.approvals, Approval(approver=approver, at=at, reason=reason))
        if len(approvals) < self.approvals_needed:
            return replace(self, approvals=approvals)
        return replace(
            self,
            approvals=approvals,
            state=RequestState.GRANTED,
            decided_at=at,
            decided_by=approver,
            decision_reason=reason,
            expires_at=at + self.duration_seconds,
        )

    def denied(self, decider: str, at: float, reason: str) -> AccessRequest:
        self._require(RequestState.PENDING, "denied")
        return self._closed(RequestState.DENIED, decider, at, reason)

    def revoked(self, decider: str, at: float, reason: str) -> AccessRequest:
        self._require(RequestState.GRANTED, "revoked")
        return self._closed(RequestState.REVOKED, decider, at, reason)

    def expired(self, at: float) -> AccessRequest:
        """A grant past its time, or a request left undecided past `pending_until`."""
        if self.state is RequestState.PENDING:
            return replace(
                self,
                state=RequestState.EXPIRED,
                decided_at=at,
                decision_reason=f"not decided within {PENDING_SECONDS / 86_400:g} days",
            )
        self._require(RequestState.GRANTED, "expired")
        return replace(self, state=RequestState.EXPIRED, decided_at=at)

    def _closed(self, state: RequestState, who: str, at: float, reason: str) -> AccessRequest:
        return replace(self, state=state, decided_at=at, decided_by=who, decision_reason=reason)

    def _require(self, state: RequestState, verb: str) -> None:
        if self.state is not state:
            raise AccessError(
                f"access request {self.request_id} is {self.state.value}; only a "
                f"{state.value} request can be {verb}"
            )
