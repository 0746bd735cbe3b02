"""What callers may learn about devices: registry facts joined with live driver state, and
only for devices the caller may see (the same NOT_FOUND for hidden and absent ones)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from attestation.appraisal import AttestationResult, AttestationStatus
from broker.access.clearance import ClearanceGate
from broker.anomaly.monitor import AnomalyMonitor
from broker.clock import Clock
from broker.devices.export_class import ExportClasses
from broker.devices.model import DeviceProfile, DeviceRecord, DeviceStatus
from broker.devices.operations import DeviceSchedule
from broker.devices.registry import DeviceRegistry
from broker.errors import not_found
from broker.store.runner import StoreRunner


class LiveDrivers(Protocol):
    """The connected drivers of a device, as far as the directory shows them (the fleet)."""

    def connections(self, device_id: str, now: float) -> list[ConnectionView]: ...


@dataclass(frozen=True, kw_only=True, slots=True)
class ConnectionView:
    profile: DeviceProfile
    attestation: AttestationResult | None
    # Attested with a current affirming result: takes work, whether or not its pipeline is
    # full now (a device running jobs back to back is busy, not unavailable).
    takes_work: bool


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
        exports: ExportClasses,
        schedule: DeviceSchedule,
        gate: ClearanceGate,
        drivers: LiveDrivers,
        runner: StoreRunner,
        clock: Clock,
        anomalies: AnomalyMonitor,
        elsewhere: Callable[[str], bool] = lambda device_id: False,
    ) -> None:
        self._registry = registry
        self._exports = exports
        self._schedule = schedule
        self._gate = gate
        self._drivers = drivers
        self._runner = runner
        self._clock = clock
        self._anomalies = anomalies
        # A device whose attested driver is connected to another process sharing the store
        # (`broker.link.rights`) is available here too.
        self._elsewhere = elsewhere

    async def list(self, caller: str) -> list[DeviceView]:
        depths = await self._runner.call(self._runner.store.queue_depths)
        now = self._clock.now()
        visible = [d for d in self._registry.all() if self._gate.visible(caller, d, now)]
        return [self._view(d, depths.get(d.device_id, 0), now) for d in visible]

    async def get(self, caller: str, device_id: str) -> DeviceView:
        """The device's view; the same NOT_FOUND, after the same work, for a device that does
        not exist and for one the caller may not see (`ClearanceGate.visible_by_id`)."""
        now = self._clock.now()
        device = self._registry.get(device_id)
        visible = self._gate.visible_by_id(caller, device_id, device, now)
        if device is None or not visible:
            self._anomalies.refusal(caller)
            raise not_found("device", device_id)
        depths = await self._runner.call(self._runner.store.queue_depths)
        return self._view(device, depths.get(device_id, 0), now)

    def _view(self, device: DeviceRecord, depth: int, now: float) -> DeviceView:
        conns = self._drivers.connections(device.device_id, now)
        results = [c.attestation for c in conns if c.attestation is not None]
        best = max(results, key=lambda r: (r.affirming(now), r.issued_at), default=None)
        status = best.status if best is not None else None
        if status is AttestationStatus.AFFIRMING and best is not None and not best.affirming(now):
            status = None  # expired: no current result
        reference = self._registry.reference_for(device.device_id)
        exported = self._exports.of(device.device_id)
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
            and (any(c.takes_work for c in conns) or self._elsewhere(device.device_id)),
            queue_depth=depth,
            operating_state=self._schedule.state(device).operating_state(now).value,
            operating_note=self._schedule.availability(device.device_id, now).why,
            two_qubit_error=self._exports.attested_two_qubit_error(device.device_id),
        )
