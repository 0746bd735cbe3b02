"""The `RegistryStore` half of the shared SQL store: device security state and checkpoints.

A mixin of `SqlStore`, which supplies the helpers declared in `sql_parts`, so every registry
write links its audit event into the same chain, in the same transaction, by the same code as a
job write. Subclasses supply `_serialize`: what keeps two
processes from assigning the same reference-values version or growing checkpoints out of order.
"""

# S608: only constant column lists and `?` markers are interpolated (see sql_store).
# ruff: noqa: S608

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
from broker.store import changes
from broker.store import registry_rows as rr
from broker.store.base import CheckpointSuperseded
from broker.store.sql_parts import SqlParts, columns, insert_sql

_DEVICES = columns(rr.DEVICE_COLUMNS)
_REFERENCES = columns(rr.REFERENCE_COLUMNS)
_REVOCATIONS = columns(rr.REVOCATION_COLUMNS)
_ATTESTATIONS = columns(rr.ATTESTATION_COLUMNS)
_CHECKPOINTS = columns(rr.CHECKPOINT_COLUMNS)

_INSERT_DEVICE = insert_sql("devices", rr.DEVICE_COLUMNS, " ON CONFLICT (device_id) DO NOTHING")
_UPDATE_DEVICE = (
    "UPDATE devices SET "
    + ", ".join(f"{col} = ?" for col in rr.DEVICE_COLUMNS[1:])
    + " WHERE device_id = ? AND version = ?"
)
_INSERT_REFERENCE = insert_sql("reference_values", rr.REFERENCE_COLUMNS)
_INSERT_REVOCATION = insert_sql(
    "revocations", rr.REVOCATION_COLUMNS, " ON CONFLICT (serial) DO NOTHING"
)
_INSERT_ATTESTATION = insert_sql("attestations", rr.ATTESTATION_COLUMNS)
_INSERT_CHECKPOINT = insert_sql("audit_checkpoints", rr.CHECKPOINT_COLUMNS)


class SqlRegistry(SqlParts):
    """Implements `RegistryStore` with the helpers of `SqlStore`."""

    def save_device(
        self, record: DeviceRecord, *, expected_version: int | None, event: AuditEvent
    ) -> bool:
        if expected_version is None:
            sql, params = _INSERT_DEVICE, rr.device_to_row(record)
        else:
            # An update that keeps the version would let a second writer's CAS succeed too.
            if record.version <= expected_version:
                raise ValueError(
                    f"device {record.device_id}: version {record.version} must exceed the"
                    f" expected {expected_version}"
                )
            row = rr.device_to_row(record)
            sql, params = _UPDATE_DEVICE, (*row[1:], record.device_id, expected_version)
        with self._transaction() as cur:
            cur.execute(sql, params)
            if cur.rowcount != 1:
                return False
            self._append(cur, event)
            self._announce(cur, changes.DEVICES)
        return True

    def get_device(self, device_id: str) -> DeviceRecord | None:
        found = self._query(f"SELECT {_DEVICES} FROM devices WHERE device_id = ?", (device_id,))
        return rr.device_from_row(found[0]) if found else None

    def list_devices(self) -> list[DeviceRecord]:
        found = self._query(f"SELECT {_DEVICES} FROM devices ORDER BY device_id")
        return [rr.device_from_row(row) for row in found]

    def add_reference_values(
        self, record: ReferenceValuesRecord, event: AuditEvent
    ) -> ReferenceValuesRecord:
        """The version of `record` is ignored: the stored one is the scope's latest + 1."""
        scope, scope_id = record.scope.value, record.scope_id
        with self._transaction() as cur:
            # Without this, two PostgreSQL writers could both read the same latest version.
            self._serialize(cur, f"reference_values:{scope}:{scope_id}")
            cur.execute(
                "SELECT COALESCE(MAX(version), 0) FROM reference_values"
                " WHERE scope = ? AND scope_id = ?",
                (scope, scope_id),
            )
            stored = dataclasses.replace(record, version=int(cur.fetchone()[0]) + 1)
            cur.execute(_INSERT_REFERENCE, rr.reference_to_row(stored))
            self._append(cur, event)
            self._announce(cur, changes.DEVICES)
        return stored

    def reference_values(self, scope: ReferenceScope, scope_id: str) -> list[ReferenceValuesRecord]:
        found = self._query(
            f"SELECT {_REFERENCES} FROM reference_values WHERE scope = ? AND scope_id = ?"
            " ORDER BY version DESC",
            (scope.value, scope_id),
        )
        return [rr.reference_from_row(row) for row in found]

    def add_revocation(self, revocation: Revocation, event: AuditEvent) -> bool:
        with self._transaction() as cur:
            cur.execute(_INSERT_REVOCATION, rr.revocation_to_row(revocation))
            if cur.rowcount != 1:
                return False
            self._append(cur, event)
            self._announce(cur, changes.DEVICES)
        return True

    def revocations(self) -> list[Revocation]:
        found = self._query(f"SELECT {_REVOCATIONS} FROM revocations ORDER BY revoked_at, serial")
        return [rr.revocation_from_row(row) for row in found]

    def registry_fingerprint(self) -> tuple[int, int, int, int]:
        row = self._query(
            "SELECT (SELECT COUNT(*) FROM devices),"
            " (SELECT COALESCE(SUM(version), 0) FROM devices),"
            " (SELECT COUNT(*) FROM revocations), (SELECT COUNT(*) FROM reference_values)"
        )[0]
        return int(row[0]), int(row[1]), int(row[2]), int(row[3])

    def add_attestation(self, record: AttestationRecord, event: AuditEvent) -> None:
        with self._transaction() as cur:
            cur.execute(_INSERT_ATTESTATION, rr.attestation_to_row(record))
            self._append(cur, event)

    def attestation_history(self, device_id: str, limit: int = 100) -> list[AttestationRecord]:
        if limit < 0:
            raise ValueError("limit must not be negative")
        # seq breaks ties between appraisals stamped with the same time: the later insert wins.
        found = self._query(
            f"SELECT {_ATTESTATIONS} FROM attestations WHERE device_id = ?"
            " ORDER BY at DESC, seq DESC LIMIT ?",
            (device_id, limit),
        )
        return [rr.attestation_from_row(row) for row in found]

    def add_checkpoint(self, checkpoint: Checkpoint) -> None:
        with self._transaction() as cur:
            self._serialize(cur, "audit_checkpoints")
            cur.execute("SELECT MAX(tree_size) FROM audit_checkpoints")
            latest = cur.fetchone()[0]
            if latest is not None and checkpoint.tree_size <= int(latest):
                raise CheckpointSuperseded(
                    f"checkpoint tree size {checkpoint.tree_size} does not exceed the latest"
                    f" checkpoint's, {latest}: tree sizes only grow"
                )
            cur.execute(_INSERT_CHECKPOINT, rr.checkpoint_to_row(checkpoint))

    def checkpoints(self) -> list[Checkpoint]:
        found = self._query(f"SELECT {_CHECKPOINTS} FROM audit_checkpoints ORDER BY tree_size")
        return [rr.checkpoint_from_row(row) for row in found]
