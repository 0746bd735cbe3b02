"""The JSON documents that access records are stored as: one function a direction per kind."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from broker.access.model import (
    AccessError,
    AccessRequest,
    Approval,
    Credential,
    Elevation,
    Principal,
    Project,
    Quota,
    RequestState,
    parse_roles,
)
from broker.devices.model import DeviceOperations, OperatingState, Window, WindowKind
from broker.jsonfields import JsonFields


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
    """The principal a stored (or seeded) document describes; AccessError naming the field."""
    where = f"principal {name!r}"
    doc = _fields(raw, where)
    expires = raw.get("clearance_expires_at")
    training = raw.get("training", {})
    if not isinstance(training, Mapping) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in training.values()
    ):
        raise AccessError(f"{where}: training must map course names to expiry times")
    return Principal(
        name=name,
        tier=doc.text("tier"),
        roles=parse_roles(doc.names("roles"), where),
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
    return Project(
        name=name,
        description=doc.text("description", ""),
        weight=doc.count("weight", 1),
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


def credential_to_doc(c: Credential) -> dict[str, Any]:
    return {
        "principal": c.principal,
        "fingerprint": c.fingerprint,
        "not_before": c.not_before,
        "not_after": c.not_after,
        "recorded_at": c.recorded_at,
        "recorded_by": c.recorded_by,
        "revoked_at": c.revoked_at,
        "revoked_by": c.revoked_by,
        "revocation_reason": c.revocation_reason,
    }


def credential_from_doc(serial: str, raw: Mapping[str, Any]) -> Credential:
    doc = _fields(raw, f"credential {serial!r}")

    def when(name: str) -> float | None:
        return None if raw.get(name) is None else doc.number(name)

    return Credential(
        serial=serial,
        principal=doc.text("principal", ""),
        fingerprint=doc.text("fingerprint", ""),
        not_before=when("not_before"),
        not_after=when("not_after"),
        recorded_at=when("recorded_at"),
        recorded_by=doc.text("recorded_by", ""),
        revoked_at=when("revoked_at"),
        revoked_by=doc.text("revoked_by", ""),
        revocation_reason=doc.text("revocation_reason", ""),
    )


def access_request_to_doc(r: AccessRequest) -> dict[str, Any]:
    return {
        "principal": r.principal,
        "requested_by": r.requested_by,
        "kind": r.kind.value,
        "value": r.value,
        "duration_seconds": r.duration_seconds,
        "reason": r.reason,
        "created_at": r.created_at,
        "break_glass": r.break_glass,
        "state": r.state.value,
        "approvals": [
            {"approver": a.approver, "at": a.at, "reason": a.reason} for a in r.approvals
        ],
        "decided_at": r.decided_at,
        "expires_at": r.expires_at,
        "decided_by": r.decided_by,
        "decision_reason": r.decision_reason,
    }


def access_request_from_doc(request_id: str, raw: Mapping[str, Any]) -> AccessRequest:
    where = f"access request {request_id!r}"
    doc = _fields(raw, where)

    def when(name: str) -> float | None:
        return None if raw.get(name) is None else doc.number(name)

    try:
        kind, state = Elevation(doc.text("kind")), RequestState(doc.text("state"))
        approvals = tuple(
            Approval(approver=str(a["approver"]), at=float(a["at"]), reason=str(a["reason"]))
            for a in raw.get("approvals", ())
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise AccessError(f"{where}: malformed: {exc}") from exc
    return AccessRequest(
        request_id=request_id,
        principal=doc.text("principal"),
        requested_by=doc.text("requested_by"),
        kind=kind,
        value=doc.text("value"),
        duration_seconds=doc.number("duration_seconds"),
        reason=doc.text("reason", ""),
        created_at=doc.number("created_at"),
        break_glass=doc.flag("break_glass", False),
        state=state,
        approvals=approvals,
        decided_at=when("decided_at"),
        expires_at=when("expires_at"),
        decided_by=doc.text("decided_by", ""),
        decision_reason=doc.text("decision_reason", ""),
    )


def _fields(raw: Any, where: str) -> JsonFields:
    return JsonFields(raw, where, AccessError)
