"""Who may use the facility and when: principals, projects, quotas, device operating states,
maintenance windows and project reservations. Plain data with a JSON form for the store.

Operators change these at run time through the access API; every change is versioned
(compare-and-set) and audited in the same transaction. The facility file only seeds them.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from broker.jsonfields import JsonFields

DAY_SECONDS = 86_400.0


class AccessError(ValueError):
    """An access record is malformed or inconsistent; the message names the field."""


class Role(enum.Enum):
    """What a principal may do; enforced per RPC at the edge (`broker.roles`)."""

    RESEARCHER = "researcher"  # submits jobs and reads their own
    OPERATOR = "operator"  # manages devices, principals, projects and other people's jobs
    SECURITY = "security"  # reads the audit log and attestation history


class RecordKind(enum.Enum):
    PRINCIPAL = "principal"
    PROJECT = "project"
    DEVICE = "device"


@dataclass(frozen=True, kw_only=True, slots=True)
class Quota:
    """Limits per principal or per project; 0 means no limit."""

    max_active_jobs: int = 0  # queued, dispatched or running at once
    max_shots_per_day: int = 0  # shots submitted in any rolling 24 hours

    @property
    def limited(self) -> bool:
        return bool(self.max_active_jobs or self.max_shots_per_day)


@dataclass(frozen=True, kw_only=True, slots=True)
class Principal:
    """A person or service, named by the common name of their client certificate."""

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


@dataclass(frozen=True, kw_only=True, slots=True)
class Project:
    """A body of work that principals belong to; the unit of reservations and fair share."""

    name: str
    description: str = ""
    weight: int = 1  # share of device time relative to other projects
    quota: Quota = Quota()


class OperatingState(enum.Enum):
    """What an operator says a device is doing (its security status is separate)."""

    ONLINE = "online"  # accepts and runs jobs
    DRAINING = "draining"  # runs what is queued, accepts nothing new
    MAINTENANCE = "maintenance"  # accepts nothing, runs nothing; queued jobs wait
    RETIRED = "retired"  # out of service for good; queued jobs never run


class WindowKind(enum.Enum):
    MAINTENANCE = "maintenance"
    RESERVATION = "reservation"


@dataclass(frozen=True, kw_only=True, slots=True)
class Window:
    """A half-open time window [starts_at, ends_at) on one device."""

    window_id: str
    kind: WindowKind
    starts_at: float
    ends_at: float
    project: str = ""  # reservations only: the project the device is reserved for
    note: str = ""
    created_by: str = ""

    def covers(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at


@dataclass(frozen=True, kw_only=True, slots=True)
class DeviceOperations:
    """A device's operating state and its schedule of maintenance windows and reservations."""

    device_id: str
    state: OperatingState = OperatingState.ONLINE
    reason: str = ""
    windows: tuple[Window, ...] = ()

    def effective_state(self, now: float) -> OperatingState:
        """The operator's state, or maintenance while a maintenance window is open."""
        if self.state in (OperatingState.ONLINE, OperatingState.DRAINING) and any(
            w.kind is WindowKind.MAINTENANCE and w.covers(now) for w in self.windows
        ):
            return OperatingState.MAINTENANCE
        return self.state

    def reservation_at(self, now: float) -> Window | None:
        """The reservation in force at `now`, else the next one to start, else None."""
        reservations = sorted(
            (w for w in self.windows if w.kind is WindowKind.RESERVATION and w.ends_at > now),
            key=lambda w: w.starts_at,
        )
        current = [w for w in reservations if w.covers(now)]
        chosen = current or reservations
        return chosen[0] if chosen else None

    def maintenance_at(self, now: float) -> Window | None:
        return next(
            (w for w in self.windows if w.kind is WindowKind.MAINTENANCE and w.covers(now)), None
        )

    def pruned(self, now: float) -> DeviceOperations:
        """Without windows that have ended: they no longer decide anything."""
        return replace(self, windows=tuple(w for w in self.windows if w.ends_at > now))


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


# --- JSON documents ---------------------------------------------------------------------------


def canonical(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def quota_to_doc(quota: Quota) -> dict[str, int]:
    return {"max_active_jobs": quota.max_active_jobs, "max_shots_per_day": quota.max_shots_per_day}


def quota_from_doc(raw: Any, where: str) -> Quota:
    if raw is None:
        return Quota()
    doc = _fields(raw, where)
    return Quota(
        max_active_jobs=doc.count("max_active_jobs"),
        max_shots_per_day=doc.count("max_shots_per_day"),
    )


def principal_to_doc(p: Principal) -> dict[str, Any]:
    return {
        "tier": p.tier,
        "roles": sorted(r.value for r in p.roles),
        "clearance_expires_at": p.clearance_expires_at,
        "affiliation": p.affiliation,
        "nationality": p.nationality,
        "jurisdictions": sorted(p.jurisdictions),
        "projects": list(p.projects),
        "training": dict(sorted(p.training.items())),
        "licences": sorted(p.licences),
        "quota": quota_to_doc(p.quota),
    }


def principal_from_doc(name: str, raw: Mapping[str, Any]) -> Principal:
    doc = _fields(raw, f"principal {name!r}")
    expires = raw.get("clearance_expires_at")
    try:
        roles = frozenset(Role(r) for r in doc.names("roles"))
    except ValueError as exc:
        raise AccessError(
            f"principal {name!r}: {exc}; roles are researcher, operator, security"
        ) from exc
    training = raw.get("training", {})
    if not isinstance(training, Mapping) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in training.values()
    ):
        raise AccessError(f"principal {name!r}: training must map course names to expiry times")
    return Principal(
        name=name,
        tier=doc.text("tier"),
        roles=roles,
        clearance_expires_at=None if expires is None else doc.number("clearance_expires_at"),
        affiliation=doc.text("affiliation", ""),
        nationality=doc.text("nationality", ""),
        jurisdictions=frozenset(doc.names("jurisdictions")),
        projects=tuple(doc.names("projects")),
        training={str(k): float(v) for k, v in training.items()},
        licences=frozenset(doc.names("licences")),
        quota=quota_from_doc(raw.get("quota"), f"principal {name!r} quota"),
    )


def project_to_doc(p: Project) -> dict[str, Any]:
    return {"description": p.description, "weight": p.weight, "quota": quota_to_doc(p.quota)}


def project_from_doc(name: str, raw: Mapping[str, Any]) -> Project:
    doc = _fields(raw, f"project {name!r}")
    weight = doc.count("weight", 1)
    if weight < 1:
        raise AccessError(f"project {name!r}: weight must be at least 1")
    return Project(
        name=name,
        description=doc.text("description", ""),
        weight=weight,
        quota=quota_from_doc(raw.get("quota"), f"project {name!r} quota"),
    )


def window_to_doc(w: Window) -> dict[str, Any]:
    return {
        "window_id": w.window_id,
        "kind": w.kind.value,
        "starts_at": w.starts_at,
        "ends_at": w.ends_at,
        "project": w.project,
        "note": w.note,
        "created_by": w.created_by,
    }


def operations_to_doc(ops: DeviceOperations) -> dict[str, Any]:
    return {
        "state": ops.state.value,
        "reason": ops.reason,
        "windows": [window_to_doc(w) for w in ops.windows],
    }


def operations_from_doc(device_id: str, raw: Mapping[str, Any]) -> DeviceOperations:
    where = f"device {device_id!r}"
    doc = _fields(raw, where)
    try:
        state = OperatingState(doc.text("state", "online"))
        windows = tuple(
            Window(
                window_id=str(w["window_id"]),
                kind=WindowKind(w["kind"]),
                starts_at=float(w["starts_at"]),
                ends_at=float(w["ends_at"]),
                project=str(w.get("project", "")),
                note=str(w.get("note", "")),
                created_by=str(w.get("created_by", "")),
            )
            for w in raw.get("windows", ())
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise AccessError(f"{where}: malformed operations record: {exc}") from exc
    return DeviceOperations(
        device_id=device_id, state=state, reason=doc.text("reason", ""), windows=windows
    )


def _fields(raw: Any, where: str) -> JsonFields:
    return JsonFields(raw, where, AccessError)
