"""The `RegistryStore` part of the memory store: device records, reference values, revocations,
attestation history and audit checkpoints."""

from __future__ import annotations

import dataclasses

from broker.audit.model import AuditEvent, Checkpoint
from broker.devices.model import (
    AttestationRecord,
    DeviceRecord,
    ReferenceScope,
    ReferenceValuesRecord,
    Revocation,
)
from broker.store.base import CheckpointSuperseded
from broker.store.memory.core import MemoryCore, check_version_moves, version_allows


def _frozen(record: ReferenceValuesRecord, version: int) -> ReferenceValuesRecord:
    """The record as stored: numbered by the store, its sets frozen whatever the caller gave."""
    return dataclasses.replace(
        record,
        version=version,
        firmware=frozenset(record.firmware),
        control_software=frozenset(record.control_software),
        driver_build=frozenset(record.driver_build),
        calibration_digest=frozenset(record.calibration_digest),
    )


class MemoryRegistry(MemoryCore):
    """Implements `RegistryStore` on the tables of `MemoryDatabase`."""

    def save_device(
        self, record: DeviceRecord, *, expected_version: int | None, event: AuditEvent
    ) -> bool:
        check_version_moves(f"device {record.device_id}", record.version, expected_version)
        with self._write() as db:
            stored = db.devices.get(record.device_id)
            if not version_allows(stored.version if stored else None, expected_version):
                return False
            db.devices.put(record.device_id, record)
            self._append(db, event)
        return True

    def get_device(self, device_id: str) -> DeviceRecord | None:
        with self._read() as db:
            return db.devices.get(device_id)

    def list_devices(self) -> list[DeviceRecord]:
        with self._read() as db:
            return sorted(db.devices.values(), key=lambda record: record.device_id)

    def add_reference_values(
        self, record: ReferenceValuesRecord, event: AuditEvent
    ) -> ReferenceValuesRecord:
        """The version of `record` is ignored: the stored one is the scope's latest + 1."""
        key = (record.scope, record.scope_id)
        with self._write() as db:
            versions = db.references.get(key) or ()
            stored = _frozen(record, versions[0].version + 1 if versions else 1)
            db.references.put(key, (stored, *versions))
            self._append(db, event)
        return stored

    def reference_values(self, scope: ReferenceScope, scope_id: str) -> list[ReferenceValuesRecord]:
        with self._read() as db:
            return list(db.references.get((scope, scope_id)) or ())

    def add_revocation(self, revocation: Revocation, event: AuditEvent) -> bool:
        with self._write() as db:
            if revocation.serial in db.revocations:
                return False
            db.revocations.put(revocation.serial, revocation)
            self._append(db, event)
        return True

    def revocations(self) -> list[Revocation]:
        with self._read() as db:
            return sorted(db.revocations.values(), key=lambda r: (r.revoked_at, r.serial))

    def registry_fingerprint(self) -> tuple[int, int, int, int]:
        with self._read() as db:
            return (
                len(db.devices),
                sum(d.version for d in db.devices.values()),
                len(db.revocations),
                sum(len(versions) for versions in db.references.values()),
            )

    def add_attestation(self, record: AttestationRecord, event: AuditEvent) -> None:
        with self._write() as db:
            stored = dataclasses.replace(record, reasons=tuple(record.reasons))
            db.attestations.put(db.next_value("attestations"), stored)
            self._append(db, event)

    def attestation_history(self, device_id: str, limit: int = 100) -> list[AttestationRecord]:
        if limit < 0:
            raise ValueError("limit must not be negative")
        with self._read() as db:
            mine = [(seq, r) for seq, r in db.attestations.items() if r.device_id == device_id]
        # seq breaks ties between appraisals stamped with the same time: the later insert wins.
        mine.sort(key=lambda item: (item[1].at, item[0]), reverse=True)
        return [record for _seq, record in mine[:limit]]

    def add_checkpoint(self, checkpoint: Checkpoint) -> None:
        with self._write() as db:
            latest = max(db.checkpoints.keys(), default=None)
            if latest is not None and checkpoint.tree_size <= latest:
                raise CheckpointSuperseded(
                    f"checkpoint tree size {checkpoint.tree_size} does not exceed the latest"
                    f" checkpoint's, {latest}: tree sizes only grow"
                )
            db.checkpoints.put(checkpoint.tree_size, checkpoint)

    def checkpoints(self) -> list[Checkpoint]:
        with self._read() as db:
            return sorted(db.checkpoints.values(), key=lambda c: c.tree_size)
