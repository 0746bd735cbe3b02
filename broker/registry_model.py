"""Operator-managed security state of devices: registrations, reference values, revocations,
quarantine, attestation history and signed audit checkpoints. Plain data; stored by the Store.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


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


class ReferenceScope(enum.Enum):
    """What a set of reference values applies to; a device's own set wins over its model's."""

    DEVICE = "DEVICE"  # one device id
    MODEL = "MODEL"  # every device of a model


@dataclass(frozen=True, kw_only=True, slots=True)
class ReferenceValuesRecord:
    """One version of the known-good measurements for a device or a model.

    Each set lists every accepted value (never empty). The window [not_before, not_after) bounds
    when this version may be used; None means open on that side.
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


@dataclass(frozen=True, kw_only=True, slots=True)
class Checkpoint:
    """A signed statement of the audit log: its first `tree_size` entries have Merkle root
    `root_hash` (hex, RFC 6962). `envelope` is the DSSE envelope (JSON) signed by the broker."""

    tree_size: int
    root_hash: str
    at: float
    key_id: str
    envelope: bytes
