"""What callers may learn about devices: registry facts joined with live link state."""

from __future__ import annotations

from dataclasses import dataclass

from attestation.appraisal import AttestationStatus
from broker.access.clearance import ClearanceGate
from broker.anomaly.monitor import AnomalyMonitor
from broker.devices.model import DeviceRecord, DeviceStatus
from broker.devices.registry import DeviceRegistry
from broker.errors import not_found
from broker.jobs.ledger import JobLedger
from broker.link.fleet import DeviceProfile, Fleet


@dataclass(frozen=True, kw_only=True, slots=True)
class DeviceView:
    device: DeviceRecord
    num_qubits: int
    calibration_digests: tuple[str, ...]
    profile: DeviceProfile | None
    connected: int
    attestation: AttestationStatus | None
    attestation_reasons: tuple[str, ...]
    attested_until: float | None
    available: bool
    queue_depth: int
    export_class: str
    export_reason: str
    operating_state: str = "online"
    operating_note: str = ""
    two_qubit_error: float | None = None


class DeviceDirectory:
    def __init__(
        self,
        *,
        registry: DeviceRegistry,
        gate: ClearanceGate,
        fleet: Fleet,
        ledger: JobLedger,
        anomalies: AnomalyMonitor,
    ) -> None:
        self.anomalies = anomalies
        self.registry = registry
        self.gate = gate
        self.fleet = fleet
        self.ledger = ledger

    async def list(self, caller: str) -> list[DeviceView]:
        depths = await self.ledger.runner.call(self.ledger.runner.store.queue_depths)
        now = self.ledger.clock.now()
        visible = [d for d in self.registry.all() if self.gate.visible(caller, d, now)]
        return [self._view(d, depths.get(d.device_id, 0)) for d in visible]

    async def get(self, caller: str, device_id: str) -> DeviceView:
        device = self.registry.get(device_id)
        if device is None or not self.gate.visible(caller, device, self.ledger.clock.now()):
            self.anomalies.refusal(caller)
            raise not_found("device", device_id)
        depths = await self.ledger.runner.call(self.ledger.runner.store.queue_depths)
        return self._view(device, depths.get(device_id, 0))

    def _view(self, device: DeviceRecord, depth: int) -> DeviceView:
        now = self.ledger.clock.now()
        conns = self.fleet.for_device(device.device_id)
        results = [c.attestation for c in conns if c.attestation is not None]
        best = max(results, key=lambda r: (r.affirming(now), r.issued_at), default=None)
        status = best.status if best is not None else None
        if (
            best is not None
            and best.status is AttestationStatus.AFFIRMING
            and not best.affirming(now)
        ):
            status = None  # expired: no current result
        reference = self.registry.reference_for(device.device_id)
        availability = self.gate.access.availability(device.device_id, now)
        exported = self.registry.export_class(device.device_id)
        return DeviceView(
            export_class=exported.export_class,
            export_reason=exported.reason,
            device=device,
            num_qubits=reference.num_qubits if reference is not None else 0,
            calibration_digests=tuple(sorted(reference.calibration_digest)) if reference else (),
            profile=conns[0].profile if conns else None,
            connected=len(conns),
            attestation=status,
            attestation_reasons=tuple(f"{r.code.value}: {r.detail}" for r in best.reasons)
            if best is not None
            else (),
            attested_until=best.expires_at if best is not None and best.affirming(now) else None,
            available=device.status is DeviceStatus.ACTIVE
            and any(c.dispatchable(now) for c in conns),
            queue_depth=depth,
            operating_state=self.gate.access.operating_state(device, now).value,
            operating_note=availability.why,
            two_qubit_error=self.registry.attested_two_qubit_error(device.device_id),
        )
