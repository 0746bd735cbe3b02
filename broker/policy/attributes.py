"""The request a policy decision is about: subject, object, action and environment attributes.

Plain frozen dataclasses importing nothing of the broker but the stdlib-only `jsonfields`, so
the decision point can be tested and run from the CLI on its own; the broker builds these from
its registries when it is wired in.
`from_json` reads the JSON form used by the corpus and `qtestbed policy explain`; times there
are epoch seconds or ISO 8601 strings ("2026-10-01T00:00:00Z").
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from broker.jsonfields import MISSING, JsonFields


class AttributesError(ValueError):
    """An attribute document is malformed; the message names the field."""


class Action(enum.Enum):
    """What the principal asks to do with the device."""

    SUBMIT_JOB = "SubmitJob"  # accept a new job for the device (checked at submit)
    DISPATCH_JOB = "DispatchJob"  # send a queued job to the device (checked right before)
    VIEW_DEVICE = "ViewDevice"  # learn that the device exists (list and get)


@dataclass(frozen=True, kw_only=True, slots=True)
class PrincipalAttributes:
    """Subject attributes; `training` maps a training id to its expiry (epoch seconds)."""

    name: str
    tier: str
    tier_rank: int
    affiliation: str = ""
    nationality: str = ""
    jurisdictions: frozenset[str] = frozenset()
    projects: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset({"researcher"})
    clearance_expires_at: int = 0  # 0 = no expiry
    training: Mapping[str, int] = field(default_factory=dict)
    licences: frozenset[str] = frozenset()
    # Devices above the principal's tier granted to it by an approved access request in force.
    granted_devices: frozenset[str] = frozenset()

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> PrincipalAttributes:
        doc = _Doc(raw, "principal")
        return cls(
            name=doc.text("name"),
            tier=doc.text("tier"),
            tier_rank=doc.integer("tier_rank"),
            affiliation=doc.text("affiliation", ""),
            nationality=doc.text("nationality", ""),
            jurisdictions=doc.name_set("jurisdictions"),
            projects=doc.name_set("projects"),
            roles=doc.name_set("roles", frozenset({"researcher"})),
            clearance_expires_at=doc.time("clearance_expires_at", 0),
            training=doc.times("training"),
            licences=doc.name_set("licences"),
            granted_devices=doc.name_set("granted_devices"),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class DeviceAttributes:
    """Object attributes; the reservation is the one in force at, or next after, `now`."""

    device_id: str
    tier: str
    tier_rank: int
    jurisdiction: str = ""
    export_class: str = "EAR99"
    export_licence: str = ""  # licence that authorises cross-jurisdiction access; "" = none
    state: str = "online"
    reserved_for: frozenset[str] = frozenset()
    reserved_from: int = 0
    reserved_until: int = 0

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> DeviceAttributes:
        doc = _Doc(raw, "device")
        return cls(
            device_id=doc.text("device_id"),
            tier=doc.text("tier"),
            tier_rank=doc.integer("tier_rank"),
            jurisdiction=doc.text("jurisdiction", ""),
            export_class=doc.text("export_class", "EAR99"),
            export_licence=doc.text("export_licence", ""),
            state=doc.text("state", "online"),
            reserved_for=doc.name_set("reserved_for"),
            reserved_from=doc.time("reserved_from", 0),
            reserved_until=doc.time("reserved_until", 0),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class JobAttributes:
    """Action attributes of the job being submitted or dispatched."""

    project: str
    data_label: str = ""
    shots: int = 0
    qubits: int = 0

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> JobAttributes:
        doc = _Doc(raw, "job")
        return cls(
            project=doc.text("project"),
            data_label=doc.text("data_label", ""),
            shots=doc.integer("shots", 0),
            qubits=doc.integer("qubits", 0),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class Environment:
    """Environment attributes. Remote access counts as an export unless configured otherwise."""

    now: int
    attestation: str  # "affirming" | "warning" | "contraindicated" | "none"
    remote_access_is_export: bool = True

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Environment:
        doc = _Doc(raw, "environment")
        return cls(
            now=doc.time("now"),
            attestation=doc.text("attestation"),
            remote_access_is_export=doc.flag("remote_access_is_export", True),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class PolicyRequest:
    """One question for the decision point. `job` is required for SubmitJob and DispatchJob."""

    principal: PrincipalAttributes
    device: DeviceAttributes
    action: Action
    environment: Environment
    job: JobAttributes | None = None

    def __post_init__(self) -> None:
        if self.action is not Action.VIEW_DEVICE and self.job is None:
            raise AttributesError(f"{self.action.value} needs the job's attributes")


class _Doc(JsonFields):
    """Typed reads with the attribute documents' own error, times and name sets."""

    def __init__(self, raw: Mapping[str, Any], where: str) -> None:
        super().__init__(raw, where, AttributesError)

    def name_set(self, key: str, default: frozenset[str] = frozenset()) -> frozenset[str]:
        return frozenset(self.names(key, default))

    def time(self, key: str, default: Any = MISSING) -> int:
        return parse_time(self.get(key, default), f"{self.where}.{key}")

    def times(self, key: str) -> dict[str, int]:
        value = self.get(key, {})
        if not isinstance(value, Mapping):
            raise AttributesError(f"{self.where}.{key} must map names to expiry times")
        return {str(k): parse_time(v, f"{self.where}.{key}.{k}") for k, v in value.items()}


def parse_time(value: Any, where: str) -> int:
    """Epoch seconds from an integer or an ISO 8601 string with a zone ("...Z")."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise AttributesError(f"{where}: {exc}") from exc
        if parsed.tzinfo is None:
            raise AttributesError(f"{where}: give a time zone, e.g. {value}Z")
        return int(parsed.timestamp())
    raise AttributesError(f"{where} must be epoch seconds or an ISO 8601 time")


def format_time(epoch: float) -> str:
    """UTC ISO 8601 with a Z, as shown in reasons."""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
