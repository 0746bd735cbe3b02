"""The device registry: which devices exist, what they must measure, and whether they may work.

The store is authoritative; this object keeps an in-memory snapshot for the hot paths
(submit, dispatch gate, appraisal) and writes every change through the store first, with its
audit event in the same transaction. Operator actions take effect at once: the snapshot is
updated as soon as the write commits.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from attestation.appraisal import ReferenceValues
from attestation.calibration import NO_WINDOWS, CalibrationWindows
from attestation.pki import CertificateError, VerifiedDevice, verify_device_chain
from broker.audit.log import AuditLog
from broker.clock import Clock
from broker.devices.model import (
    AttestationRecord,
    DeviceRecord,
    DeviceStatus,
    ReferenceScope,
    ReferenceValuesRecord,
    Revocation,
)
from broker.errors import BrokerError, ErrorCode, not_found
from broker.store.runner import StoreRunner


@dataclass(frozen=True, kw_only=True, slots=True)
class ReferenceInput:
    """An operator's new reference values, before the store numbers the version."""

    scope: ReferenceScope
    scope_id: str
    firmware: frozenset[str]
    control_software: frozenset[str]
    driver_build: frozenset[str]
    calibration_digest: frozenset[str]
    num_qubits: int
    not_before: float | None = None
    not_after: float | None = None
    calibration: CalibrationWindows = NO_WINDOWS


class DeviceRegistry:
    def __init__(
        self,
        *,
        runner: StoreRunner,
        clock: Clock,
        audit: AuditLog,
        trust_anchor: bytes,
    ) -> None:
        self._runner = runner
        self._clock = clock
        self._audit = audit
        self.trust_anchor = trust_anchor
        self.devices: dict[str, DeviceRecord] = {}
        self._references: dict[tuple[ReferenceScope, str], ReferenceValuesRecord] = {}
        self.revoked_serials: frozenset[str] = frozenset()
        # Devices being revoked: refused by the dispatch gate before the revocation commits.
        self._revoking: set[str] = set()
        self._fingerprint: tuple[int, int, int, int] | None = None

    async def load(self) -> None:
        store = self._runner.store
        # Read first: a change committed while the rest is read makes the next refresh differ.
        self._fingerprint = await self._runner.call(store.registry_fingerprint)
        self.devices = {d.device_id: d for d in await self._runner.call(store.list_devices)}
        revoked = await self._runner.call(store.revocations)
        self.revoked_serials = frozenset(r.serial for r in revoked)
        for record in self.devices.values():
            for scope, scope_id in (
                (ReferenceScope.DEVICE, record.device_id),
                (ReferenceScope.MODEL, record.model),
            ):
                await self._refresh_reference(scope, scope_id)

    async def refresh(self) -> bool:
        """Re-read everything if another writer (a broker replica sharing the store) changed
        a device, a revocation or reference values; True if re-read. A store no other process
        writes is never re-read: every change went through this object."""
        if not self._runner.store.replicated:
            return False
        current = await self._runner.call(self._runner.store.registry_fingerprint)
        if current == self._fingerprint:
            return False
        await self.load()
        return True

    def revoked_devices(self) -> frozenset[str]:
        return frozenset(
            d.device_id for d in self.devices.values() if d.status is DeviceStatus.REVOKED
        )

    async def _refresh_reference(self, scope: ReferenceScope, scope_id: str) -> None:
        versions = await self._runner.call(self._runner.store.reference_values, scope, scope_id)
        if versions:
            self._references[(scope, scope_id)] = versions[0]

    # ------------------------------------------------------------------ hot-path reads

    def get(self, device_id: str) -> DeviceRecord | None:
        return self.devices.get(device_id)

    def accepts_work(self, device_id: str) -> bool:
        """The dispatch gate's view: registered, ACTIVE, and not in the middle of a revocation."""
        record = self.devices.get(device_id)
        return (
            record is not None
            and record.status is DeviceStatus.ACTIVE
            and device_id not in self._revoking
        )

    def _chosen_reference(self, device_id: str) -> ReferenceValuesRecord | None:
        record = self.devices.get(device_id)
        if record is None:
            return None
        return self._references.get((ReferenceScope.DEVICE, device_id)) or self._references.get(
            (ReferenceScope.MODEL, record.model)
        )

    def reference_for(self, device_id: str) -> ReferenceValues | None:
        """The newest reference values for the device itself, else for its model."""
        chosen = self._chosen_reference(device_id)
        if chosen is None:
            return None
        return _appraisal_values(chosen, version=chosen.version)

    def reference_label(self, device_id: str) -> str:
        """Which reference values are in force for the device: scope, id and version."""
        chosen = self._chosen_reference(device_id)
        if chosen is None:
            return ""
        return f"{chosen.scope.value.lower()}:{chosen.scope_id}:v{chosen.version}"

    def num_qubits(self, device_id: str) -> int | None:
        reference = self.reference_for(device_id)
        return reference.num_qubits if reference is not None else None

    def registered_fingerprints(self, device_id: str) -> frozenset[str]:
        record = self.devices.get(device_id)
        if record is None or record.status is DeviceStatus.REVOKED:
            return frozenset()
        return frozenset({record.fingerprint})

    # ------------------------------------------------------------------ operator actions

    def _verify_chain(self, chain_pem: bytes) -> VerifiedDevice:
        try:
            return verify_device_chain(
                chain_pem,
                self.trust_anchor,
                now=dt.datetime.fromtimestamp(self._clock.now(), dt.UTC),
                revoked_serials=self.revoked_serials,
            )
        except CertificateError as exc:
            raise BrokerError(
                ErrorCode.INVALID_ARGUMENT,
                f"certificate chain refused ({exc.code.value}): {exc}; issue the device "
                "certificate from this facility's CA",
            ) from exc

    async def register(
        self, actor: str, chain_pem: bytes, *, tier: str, model: str
    ) -> DeviceRecord:
        verified = self._verify_chain(chain_pem)
        now = self._clock.now()
        old = self.devices.get(verified.device_id)
        if old is not None and old.status is DeviceStatus.REVOKED:
            raise BrokerError(
                ErrorCode.FAILED_PRECONDITION,
                f"device {verified.device_id!r} is revoked; a revoked device id stays revoked",
            )
        record = DeviceRecord(
            device_id=verified.device_id,
            tier=tier,
            model=model or verified.device_id,
            certificate_chain_pem=chain_pem,
            fingerprint=verified.fingerprint,
            serial=verified.serial,
            status=old.status if old is not None else DeviceStatus.ACTIVE,
            status_reason=old.status_reason if old is not None else "registered",
            status_changed_at=old.status_changed_at if old is not None else now,
            registered_at=now,
            registered_by=actor,
            version=old.version + 1 if old is not None else 1,
        )
        detail = {"fingerprint": record.fingerprint, "serial": record.serial, "tier": tier}
        await self._save(record, old, "device.registered", actor, detail)
        return record

    async def _save(
        self,
        record: DeviceRecord,
        old: DeviceRecord | None,
        kind: str,
        actor: str,
        detail: Mapping[str, object],
    ) -> None:
        event = self._audit.event(kind, actor, record.device_id, detail)
        saved = await self._runner.call(
            self._runner.store.save_device,
            record,
            expected_version=old.version if old is not None else None,
            event=event,
        )
        if not saved:
            raise BrokerError(
                ErrorCode.UNAVAILABLE,
                f"device {record.device_id!r} changed concurrently; repeat the command",
            )
        self.devices[record.device_id] = record

    async def set_reference(self, actor: str, values: ReferenceInput) -> ReferenceValuesRecord:
        try:
            _appraisal_values(values, version=1)  # the verifier's own checks, before storing
        except ValueError as exc:
            raise BrokerError(ErrorCode.INVALID_ARGUMENT, str(exc)) from exc
        # Field by field, not asdict(): that would turn the calibration windows into dicts.
        record = ReferenceValuesRecord(
            **{f.name: getattr(values, f.name) for f in dataclasses.fields(values)},
            version=0,
            created_at=self._clock.now(),
            created_by=actor,
        )
        event = self._audit.event(
            "reference.published",
            actor,
            f"{values.scope.value.lower()}:{values.scope_id}",
            {
                "firmware": sorted(values.firmware),
                "control_software": sorted(values.control_software),
                "driver_build": sorted(values.driver_build),
                "calibration_digest": sorted(values.calibration_digest),
                "num_qubits": values.num_qubits,
                "not_before": values.not_before,
                "not_after": values.not_after,
                "calibration": values.calibration.as_document(),
            },
        )
        stored = await self._runner.call(self._runner.store.add_reference_values, record, event)
        self._references[(stored.scope, stored.scope_id)] = stored
        return stored

    async def references(self, scope: ReferenceScope, scope_id: str) -> list[ReferenceValuesRecord]:
        return await self._runner.call(self._runner.store.reference_values, scope, scope_id)

    async def set_status(
        self, actor: str, device_id: str, status: DeviceStatus, reason: str
    ) -> DeviceRecord:
        old = self.devices.get(device_id)
        if old is None:
            raise not_found("device", device_id)
        record = dataclasses.replace(
            old,
            status=status,
            status_reason=reason,
            status_changed_at=self._clock.now(),
            version=old.version + 1,
        )
        kind = {
            DeviceStatus.ACTIVE: "device.released",
            DeviceStatus.QUARANTINED: "device.quarantined",
            DeviceStatus.REVOKED: "device.revoked",
        }[status]
        await self._save(record, old, kind, actor, {"reason": reason, "from": old.status.value})
        return record

    async def revoke(self, actor: str, device_id: str, reason: str) -> DeviceRecord:
        old = self.devices.get(device_id)
        if old is None:
            raise not_found("device", device_id)
        self._revoking.add(device_id)  # effective at once, even before the writes commit
        try:
            return await self._revoke(actor, old, reason)
        finally:
            self._revoking.discard(device_id)

    async def _revoke(self, actor: str, old: DeviceRecord, reason: str) -> DeviceRecord:
        device_id = old.device_id
        revocation = Revocation(
            serial=old.serial,
            device_id=device_id,
            revoked_at=self._clock.now(),
            revoked_by=actor,
            reason=reason,
        )
        event = self._audit.event("certificate.revoked", actor, device_id, {"serial": old.serial})
        await self._runner.call(self._runner.store.add_revocation, revocation, event)
        self.revoked_serials = self.revoked_serials | {old.serial}
        return await self.set_status(actor, device_id, DeviceStatus.REVOKED, reason)

    async def record_attestation(self, record: AttestationRecord, kind: str) -> None:
        detail = {
            "status": record.status,
            "reasons": list(record.reasons),
            "evidence_digest": record.evidence_digest,
            "expires_at": record.expires_at,
        }
        event = self._audit.event(kind, "broker", record.device_id, detail)
        await self._runner.call(self._runner.store.add_attestation, record, event)

    async def history(self, device_id: str, limit: int) -> list[AttestationRecord]:
        if device_id not in self.devices:
            raise not_found("device", device_id)
        return await self._runner.call(self._runner.store.attestation_history, device_id, limit)

    def all(self) -> Iterable[DeviceRecord]:
        return sorted(self.devices.values(), key=lambda d: d.device_id)

    async def release(self, actor: str, device_id: str, reason: str) -> DeviceRecord:
        """Lift a quarantine, only once the device has attested successfully since it began."""
        old = self.devices.get(device_id)
        if old is None:
            raise not_found("device", device_id)
        if old.status is not DeviceStatus.QUARANTINED:
            raise BrokerError(
                ErrorCode.FAILED_PRECONDITION,
                f"device {device_id!r} is {old.status.value}; "
                "only a quarantined device can be released",
            )
        latest = await self._runner.call(self._runner.store.attestation_history, device_id, 1)
        now = self._clock.now()
        if (
            not latest
            or latest[0].status != "affirming"
            or latest[0].at < old.status_changed_at
            or latest[0].expires_at <= now
        ):
            raise BrokerError(
                ErrorCode.FAILED_PRECONDITION,
                f"device {device_id!r} has not passed an attestation since it was quarantined; "
                "fix it, let its driver attest again (see `qtestbed device history`), then release",
            )
        return await self.set_status(
            actor, device_id, DeviceStatus.ACTIVE, reason or f"released by {actor}"
        )

    async def seed(self, entries: Iterable[SeedDevice]) -> None:
        """Register devices listed in the facility file that the store does not know yet."""
        for entry in entries:
            if entry.reference.scope_id in self.devices:
                continue
            await self.register(
                "facility-file", entry.chain_pem, tier=entry.tier, model=entry.model
            )
            await self.set_reference("facility-file", entry.reference)


@dataclass(frozen=True, kw_only=True, slots=True)
class SeedDevice:
    """A device as written in the facility file, registered on first start."""

    tier: str
    model: str
    chain_pem: bytes
    reference: ReferenceInput


# Records are immutable (a change is a new version), so each is built and validated once: the
# export class of every device lookup reads the qubit count through here, and it should cost
# what a dictionary read costs whichever device is asked about. Refusals are not cached.
@functools.lru_cache(maxsize=1024)
def _appraisal_values(
    values: ReferenceInput | ReferenceValuesRecord, *, version: int
) -> ReferenceValues:
    """The verifier's view of stored or proposed reference values (it validates them)."""
    return ReferenceValues(
        firmware=values.firmware,
        control_software=values.control_software,
        driver_build=values.driver_build,
        calibration_digest=values.calibration_digest,
        num_qubits=values.num_qubits,
        not_before=values.not_before,
        not_after=values.not_after,
        version=version,
        calibration=values.calibration,
    )
