"""Row <-> registry record mapping shared by both stores (the registry half of `rows`).

Each `*_COLUMNS` tuple is the column order of that table's SELECT and INSERT, and each
`*_to_row` returns values in that order. Sets are stored as sorted compact JSON arrays, so an
equal set always stores as equal text; the order of an attestation's reasons is kept.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from attestation.calibration import CalibrationWindows
from broker.audit.model import Checkpoint
from broker.devices.model import (
    AttestationRecord,
    DeviceRecord,
    DeviceStatus,
    ReferenceScope,
    ReferenceValuesRecord,
    Revocation,
)
from broker.store.rows import Row

DEVICE_COLUMNS: tuple[str, ...] = (
    "device_id",
    "tier",
    "model",
    "certificate_chain_pem",
    "fingerprint",
    "serial",
    "status",
    "status_reason",
    "status_changed_at",
    "registered_at",
    "registered_by",
    "version",
)
REFERENCE_COLUMNS: tuple[str, ...] = (
    "scope",
    "scope_id",
    "version",
    "firmware",
    "control_software",
    "driver_build",
    "calibration_digest",
    "num_qubits",
    "not_before",
    "not_after",
    "created_at",
    "created_by",
    "calibration_windows",
)
REVOCATION_COLUMNS: tuple[str, ...] = (
    "serial",
    "device_id",
    "revoked_at",
    "revoked_by",
    "reason",
)
# `seq` (the primary key) is assigned by the database and never leaves the store.
ATTESTATION_COLUMNS: tuple[str, ...] = (
    "device_id",
    "at",
    "status",
    "reasons",
    "evidence_digest",
    "evidence",
    "expires_at",
)
CHECKPOINT_COLUMNS: tuple[str, ...] = ("tree_size", "root_hash", "at", "key_id", "envelope")


def _json_list(values: Iterable[str]) -> str:
    return json.dumps(list(values), separators=(",", ":"))


def _json_set(values: Iterable[str]) -> str:
    return _json_list(sorted(values))


def _strings(text: str) -> list[str]:
    return [str(value) for value in json.loads(text)]


def device_to_row(record: DeviceRecord) -> tuple[Any, ...]:
    return (
        record.device_id,
        record.tier,
        record.model,
        record.certificate_chain_pem,
        record.fingerprint,
        record.serial,
        record.status.value,
        record.status_reason,
        record.status_changed_at,
        record.registered_at,
        record.registered_by,
        record.version,
    )


def device_from_row(row: Row) -> DeviceRecord:
    r = dict(zip(DEVICE_COLUMNS, row, strict=True))
    return DeviceRecord(
        device_id=r["device_id"],
        tier=r["tier"],
        model=r["model"],
        certificate_chain_pem=bytes(r["certificate_chain_pem"]),
        fingerprint=r["fingerprint"],
        serial=r["serial"],
        status=DeviceStatus(r["status"]),
        status_reason=r["status_reason"],
        status_changed_at=r["status_changed_at"],
        registered_at=r["registered_at"],
        registered_by=r["registered_by"],
        version=r["version"],
    )


def reference_to_row(record: ReferenceValuesRecord) -> tuple[Any, ...]:
    return (
        record.scope.value,
        record.scope_id,
        record.version,
        _json_set(record.firmware),
        _json_set(record.control_software),
        _json_set(record.driver_build),
        _json_set(record.calibration_digest),
        record.num_qubits,
        record.not_before,
        record.not_after,
        record.created_at,
        record.created_by,
        json.dumps(record.calibration.as_document(), sort_keys=True, separators=(",", ":")),
    )


def reference_from_row(row: Row) -> ReferenceValuesRecord:
    r = dict(zip(REFERENCE_COLUMNS, row, strict=True))
    return ReferenceValuesRecord(
        scope=ReferenceScope(r["scope"]),
        scope_id=r["scope_id"],
        version=r["version"],
        firmware=frozenset(_strings(r["firmware"])),
        control_software=frozenset(_strings(r["control_software"])),
        driver_build=frozenset(_strings(r["driver_build"])),
        calibration_digest=frozenset(_strings(r["calibration_digest"])),
        num_qubits=r["num_qubits"],
        not_before=r["not_before"],
        not_after=r["not_after"],
        created_at=r["created_at"],
        created_by=r["created_by"],
        calibration=CalibrationWindows.from_document(json.loads(r["calibration_windows"])),
    )


def revocation_to_row(revocation: Revocation) -> tuple[Any, ...]:
    return (
        revocation.serial,
        revocation.device_id,
        revocation.revoked_at,
        revocation.revoked_by,
        revocation.reason,
    )


def revocation_from_row(row: Row) -> Revocation:
    serial, device_id, revoked_at, revoked_by, reason = row
    return Revocation(
        serial=serial,
        device_id=device_id,
        revoked_at=revoked_at,
        revoked_by=revoked_by,
        reason=reason,
    )


def attestation_to_row(record: AttestationRecord) -> tuple[Any, ...]:
    return (
        record.device_id,
        record.at,
        record.status,
        _json_list(record.reasons),
        record.evidence_digest,
        record.evidence,
        record.expires_at,
    )


def attestation_from_row(row: Row) -> AttestationRecord:
    device_id, at, status, reasons, evidence_digest, evidence, expires_at = row
    return AttestationRecord(
        device_id=device_id,
        at=at,
        status=status,
        reasons=tuple(_strings(reasons)),
        evidence_digest=evidence_digest,
        evidence=bytes(evidence),
        expires_at=expires_at,
    )


def checkpoint_to_row(checkpoint: Checkpoint) -> tuple[Any, ...]:
    return (
        checkpoint.tree_size,
        checkpoint.root_hash,
        checkpoint.at,
        checkpoint.key_id,
        checkpoint.envelope,
    )


def checkpoint_from_row(row: Row) -> Checkpoint:
    tree_size, root_hash, at, key_id, envelope = row
    return Checkpoint(
        tree_size=tree_size, root_hash=root_hash, at=at, key_id=key_id, envelope=bytes(envelope)
    )
