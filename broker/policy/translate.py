"""Requests into Cedar (entities, request, context) and reason templates back into text."""

from __future__ import annotations

import re
from typing import Any

from broker.policy.attributes import Action, PolicyRequest, format_time

NAMESPACE = "Qtestbed"
PRINCIPAL_TYPE = f"{NAMESPACE}::Principal"
DEVICE_TYPE = f"{NAMESPACE}::Device"
ACTION_TYPE = f"{NAMESPACE}::Action"


def to_cedar(request: PolicyRequest) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The Cedar request (with its context) and the entity list for one decision."""
    p, d, env = request.principal, request.device, request.environment
    principal = {
        "uid": {"type": PRINCIPAL_TYPE, "id": p.name},
        "attrs": {
            "tier": p.tier,
            "tier_rank": p.tier_rank,
            "affiliation": p.affiliation,
            "nationality": p.nationality,
            "jurisdictions": sorted(p.jurisdictions),
            "projects": sorted(p.projects),
            "roles": sorted(p.roles),
            "clearance_expires_at": p.clearance_expires_at,
            "licences": sorted(p.licences),
            "granted_devices": [
                {"__entity": {"type": DEVICE_TYPE, "id": device_id}}
                for device_id in sorted(p.granted_devices)
            ],
        },
        "parents": [],
        "tags": dict(p.training),
    }
    device = {
        "uid": {"type": DEVICE_TYPE, "id": d.device_id},
        "attrs": {
            "tier": d.tier,
            "tier_rank": d.tier_rank,
            "jurisdiction": d.jurisdiction,
            "export_class": d.export_class,
            "export_licence": d.export_licence,
            "state": d.state,
            "reserved_for": sorted(d.reserved_for),
            "reserved_from": d.reserved_from,
            "reserved_until": d.reserved_until,
        },
        "parents": [],
    }
    context: dict[str, Any] = {
        "env": {
            "now": env.now,
            "attestation": env.attestation,
            "remote_access_is_export": env.remote_access_is_export,
        }
    }
    if request.action is not Action.VIEW_DEVICE:
        job = request.job
        assert job is not None  # PolicyRequest checks this at construction
        context["job"] = {
            "data_label": job.data_label,
            "shots": job.shots,
            "qubits": job.qubits,
            "project": job.project,
        }
    cedar_request = {
        "principal": principal["uid"],
        "action": {"type": ACTION_TYPE, "id": request.action.value},
        "resource": device["uid"],
        "context": context,
    }
    return cedar_request, [principal, device]


_PLACEHOLDER = re.compile(r"\{([a-z]+)\.([A-Za-z0-9_.-]+?)(?:\|([a-z]+))?\}")


def render(template: str, request: PolicyRequest) -> str:
    """Fill a reason template's placeholders from the request (see default.cedar's header)."""
    return _PLACEHOLDER.sub(lambda m: _fill(m, request), template)


def _fill(match: re.Match[str], request: PolicyRequest) -> str:
    source, name, form = match.groups()
    value = _lookup(source, name, request)
    if value is _UNKNOWN:
        return match.group(0)
    if form == "expiry":
        return _expiry(value, request.environment.now)
    if form == "date":
        return format_time(value) if isinstance(value, int) else str(value)
    if isinstance(value, frozenset):
        return ", ".join(f"'{v}'" for v in sorted(value)) if value else "none"
    return str(value)


_UNKNOWN: Any = object()


def _lookup(source: str, name: str, request: PolicyRequest) -> Any:
    if source == "training":
        return request.principal.training.get(name)
    target: Any = {
        "principal": request.principal,
        "device": request.device,
        "job": request.job,
        "env": request.environment,
    }.get(source)
    if target is None or name not in getattr(type(target), "__slots__", ()):
        return _UNKNOWN
    return getattr(target, name)


def _expiry(value: Any, now: int) -> str:
    if value is None:
        return "is not on record"
    if value == 0:
        return "does not expire"
    if value <= now:
        return f"expired on {format_time(value)}"
    return f"is valid until {format_time(value)}"
