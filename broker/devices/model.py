"""One device's state: what the registry holds about its identity and security (status,
reference values, revocations, attestation history) and what its operator says it is doing
(operating state, maintenance windows, reservations). Plain data; stored by the Store."""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from attestation.calibration import NO_WINDOWS, CalibrationWindows


class DeviceStatus(enum.Enum):
    """The operator-visible security state of a registered device."""

    ACTIVE = "ACTIVE"  # may receive work whenever a connection's attestation affirms
    QUARANTINED = "QUARANTINED"  # failed an authenticated appraisal; only an operator releases
    REVOKED = "REVOKED"  # its certificate or key was revoked; receives nothing, ever


@dataclass(frozen=True, kw_only=True, slots=True)
class DeviceRecord:
    """A registered device: the certificate that binds its id to its attestation key.

    `certificate_chain_pem` is the device certificate followed by any intermediates (not the
    root). `fingerprint` is the hex SHA-256 of the device certificate's DER; `serial` its
    serial number in hex. `version` increases with every change (compare-and-set).
    """

    device_id: str
    tier: str
    model: str
    certificate_chain_pem: bytes
    fingerprint: str
    serial: str
    status: DeviceStatus
    status_reason: str
    status_changed_at: float
    registered_at: float
    registered_by: str
    version: int = 1


def stand_in(device_id: str, tier: str) -> DeviceRecord:
    """A record for an id that names no device, of the same shape as a registered one: lookups
    decide visibility against it so that an absent device costs what a hidden one does. It is
    never stored and proves nothing (no certificate, never registered)."""
    return DeviceRecord(
        device_id=device_id,
        tier=tier,
        model=device_id,
        certificate_chain_pem=b"",
        fingerprint="",
        serial="",
        status=DeviceStatus.ACTIVE,
        status_reason="",
        status_changed_at=0.0,
        registered_at=0.0,
        registered_by="",
    )


class ReferenceScope(enum.Enum):
    """What a set of reference values applies to; a device's own set wins over its model's."""

    DEVICE = "DEVICE"  # one device id
    MODEL = "MODEL"  # every device of a model


@dataclass(frozen=True, kw_only=True, slots=True)
class ReferenceValuesRecord:
    """One version of the known-good measurements for a device or a model.

    Each set lists every accepted value (never empty). The window [not_before, not_after) bounds
    when this version may be used; None means open on that side. `calibration` holds the
    tolerance windows of the calibration figures (none set: only physical limits apply).
    """

    scope: ReferenceScope
    scope_id: str
    version: int
    firmware: frozenset[str]
    control_software: frozenset[str]
    driver_build: frozenset[str]
    calibration_digest: frozenset[str]
    num_qubits: int
    not_before: float | None
    not_after: float | None
    created_at: float
    created_by: str
    calibration: CalibrationWindows = NO_WINDOWS


@dataclass(frozen=True, kw_only=True, slots=True)
class Revocation:
    """A revoked device certificate (by serial, hex) with who revoked it and why."""

    serial: str
    device_id: str
    revoked_at: float
    revoked_by: str
    reason: str


@dataclass(frozen=True, kw_only=True, slots=True)
class AttestationRecord:
    """One appraisal outcome, kept for the security team's history of a device.

    `evidence` is the envelope as received (DSSE JSON), so a result's receipt can later be tied
    to the exact measurements the device attested with (its digest is `evidence_digest`).
    """

    device_id: str
    at: float
    status: str
    reasons: tuple[str, ...]
    evidence_digest: str
    evidence: bytes
    expires_at: float


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
class DeviceState:
    """One device's whole state: its security status from the registry and its operator's
    schedule, joined here and nowhere else."""

    record: DeviceRecord
    operations: DeviceOperations

    def operating_state(self, now: float) -> OperatingState:
        """What the device is doing now: a revoked certificate retires it whatever its
        operator state; otherwise the operator's state, or maintenance inside a window."""
        if self.record.status is DeviceStatus.REVOKED:
            return OperatingState.RETIRED
        return self.operations.effective_state(now)


@dataclass(frozen=True, kw_only=True, slots=True)
class DeviceProfile:
    """What a device can run, as its driver announced it in Hello."""

    num_qubits: int
    basis_gates: tuple[str, ...]
    coupling_map: tuple[tuple[int, int], ...]
    backend: str
    driver_build: str
