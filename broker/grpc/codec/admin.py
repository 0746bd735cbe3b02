"""Protobuf <-> domain conversions for the operator and security services."""

from __future__ import annotations

import json
from collections.abc import Sequence

from attestation.calibration import CALIBRATION_FIGURES, CalibrationWindows, Tolerance
from broker.audit.model import AuditEntry, Checkpoint
from broker.audit.witnesses import StoredCosignature
from broker.devices.model import (
    AttestationRecord,
    DeviceRecord,
    ReferenceScope,
    ReferenceValuesRecord,
)
from broker.devices.registry import ReferenceInput
from broker.errors import BrokerError, ErrorCode
from broker.policy.explain import Explanation
from qtestbed.shared.wire import seconds, to_timestamp
from qtestbed.v1 import admin_pb2

_SCOPE_FROM_PROTO = {
    admin_pb2.REFERENCE_SCOPE_DEVICE: ReferenceScope.DEVICE,
    admin_pb2.REFERENCE_SCOPE_MODEL: ReferenceScope.MODEL,
}
_SCOPE_TO_PROTO = {v: k for k, v in _SCOPE_FROM_PROTO.items()}


def scope_from_proto(scope: int) -> ReferenceScope:
    found = _SCOPE_FROM_PROTO.get(admin_pb2.ReferenceScope.ValueType(scope))
    if found is None:
        raise BrokerError(ErrorCode.INVALID_ARGUMENT, "scope must be DEVICE or MODEL")
    return found


def device_to_proto(record: DeviceRecord) -> admin_pb2.RegisteredDevice:
    return admin_pb2.RegisteredDevice(
        device_id=record.device_id,
        tier=record.tier,
        model=record.model,
        fingerprint=record.fingerprint,
        serial=record.serial,
        status=admin_pb2.DeviceStatus.Value(f"DEVICE_STATUS_{record.status.value}"),
        status_reason=record.status_reason,
        status_changed_at=to_timestamp(record.status_changed_at),
        registered_at=to_timestamp(record.registered_at),
        registered_by=record.registered_by,
    )


def reference_from_proto(values: admin_pb2.ReferenceValues) -> ReferenceInput:
    if not values.scope_id:
        raise BrokerError(ErrorCode.INVALID_ARGUMENT, "scope_id (device id or model) is required")
    return ReferenceInput(
        scope=scope_from_proto(values.scope),
        scope_id=values.scope_id,
        firmware=frozenset(values.firmware),
        control_software=frozenset(values.control_software),
        driver_build=frozenset(values.driver_build),
        calibration_digest=frozenset(values.calibration_digest),
        num_qubits=values.num_qubits,
        not_before=seconds(values.not_before) if values.HasField("not_before") else None,
        not_after=seconds(values.not_after) if values.HasField("not_after") else None,
        calibration=_windows_from_proto(values),
    )


def _windows_from_proto(values: admin_pb2.ReferenceValues) -> CalibrationWindows:
    windows = {}
    for name in CALIBRATION_FIGURES:
        if not values.HasField(name):  # type: ignore[arg-type]  # the figure names are fields
            continue
        window: admin_pb2.CalibrationWindow = getattr(values, name)
        try:
            windows[name] = Tolerance(
                minimum=window.min if window.HasField("min") else None,
                maximum=window.max if window.HasField("max") else None,
            )
        except ValueError as exc:
            raise BrokerError(ErrorCode.INVALID_ARGUMENT, f"{name} window: {exc}") from exc
    try:
        return CalibrationWindows(**windows)
    except ValueError as exc:
        raise BrokerError(ErrorCode.INVALID_ARGUMENT, str(exc)) from exc


def _window_to_proto(window: Tolerance | None) -> admin_pb2.CalibrationWindow | None:
    if window is None:
        return None
    return admin_pb2.CalibrationWindow(min=window.minimum, max=window.maximum)


def reference_to_proto(record: ReferenceValuesRecord) -> admin_pb2.ReferenceValues:
    return admin_pb2.ReferenceValues(
        scope=_SCOPE_TO_PROTO[record.scope],
        scope_id=record.scope_id,
        version=record.version,
        firmware=sorted(record.firmware),
        control_software=sorted(record.control_software),
        driver_build=sorted(record.driver_build),
        calibration_digest=sorted(record.calibration_digest),
        num_qubits=record.num_qubits,
        not_before=to_timestamp(record.not_before),
        not_after=to_timestamp(record.not_after),
        created_at=to_timestamp(record.created_at),
        created_by=record.created_by,
        **{name: _window_to_proto(window) for name, window in record.calibration.items()},
    )


def attestation_to_proto(record: AttestationRecord) -> admin_pb2.AttestationEvent:
    return admin_pb2.AttestationEvent(
        device_id=record.device_id,
        at=to_timestamp(record.at),
        status=record.status,
        reasons=list(record.reasons),
        evidence_digest=record.evidence_digest,
        expires_at=to_timestamp(record.expires_at),
    )


def audit_to_proto(entry: AuditEntry) -> admin_pb2.AuditEntry:
    return admin_pb2.AuditEntry(
        seq=entry.seq,
        kind=entry.event.kind,
        actor=entry.event.actor,
        subject=entry.event.subject,
        at=entry.event.at,
        detail_json=json.dumps(entry.event.detail, sort_keys=True, separators=(",", ":")),
        prev_hash=entry.prev_hash,
        entry_hash=entry.entry_hash,
    )


def checkpoint_to_proto(
    checkpoint: Checkpoint, cosignatures: Sequence[StoredCosignature] = ()
) -> admin_pb2.Checkpoint:
    return admin_pb2.Checkpoint(
        tree_size=checkpoint.tree_size,
        root_hash=checkpoint.root_hash,
        at=checkpoint.at,
        key_id=checkpoint.key_id,
        envelope=checkpoint.envelope,
        cosignatures=[
            admin_pb2.Cosignature(
                witness=c.witness, key_id=c.key_id, witnessed_at=c.witnessed_at, envelope=c.envelope
            )
            for c in cosignatures
        ],
    )


def explanation_to_proto(explained: Explanation) -> admin_pb2.ExplainAccessResponse:
    return admin_pb2.ExplainAccessResponse(
        allowed=explained.allowed,
        policy_ids=list(explained.policy_ids),
        reasons=list(explained.reasons),
        errors=list(explained.errors),
        requirements=[
            admin_pb2.PolicyRequirement(rule_id=r.rule_id, met=r.met, text=r.text)
            for r in explained.requirements
        ],
    )
