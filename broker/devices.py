"""What callers may learn about devices: registry facts joined with live link state."""

from __future__ import annotations

from dataclasses import dataclass

from attestation.appraisal import AttestationStatus
from broker.errors import not_found
from broker.facility import FacilityRef, RegisteredDevice
from broker.fleet import DeviceProfile, Fleet
from broker.ledger import JobLedger


@dataclass(frozen=True, kw_only=True, slots=True)
class DeviceView:
    device: RegisteredDevice
    profile: DeviceProfile | None
    connected: int
    attestation: AttestationStatus | None
    attestation_reasons: tuple[str, ...]
    attested_until: float | None
    available: bool
    queue_depth: int


class DeviceDirectory:
    def __init__(self, *, facility: FacilityRef, fleet: Fleet, ledger: JobLedger) -> None:
        self.facility = facility
        self.fleet = fleet
        self.ledger = ledger

    async def list(self, caller: str) -> list[DeviceView]:
        depths = await self.ledger.runner.call(self.ledger.runner.store.queue_depths)
        devices = self.facility.current.devices.values()
        return [self._view(d, depths.get(d.device_id, 0)) for d in sorted(devices, key=_key)]

    async def get(self, caller: str, device_id: str) -> DeviceView:
        device = self.facility.current.devices.get(device_id)
        if device is None:
            raise not_found("device", device_id)
        depths = await self.ledger.runner.call(self.ledger.runner.store.queue_depths)
        return self._view(device, depths.get(device_id, 0))

    def _view(self, device: RegisteredDevice, depth: int) -> DeviceView:
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
        return DeviceView(
            device=device,
            profile=conns[0].profile if conns else None,
            connected=len(conns),
            attestation=status,
            attestation_reasons=tuple(f"{r.code.value}: {r.detail}" for r in best.reasons)
            if best is not None
            else (),
            attested_until=best.expires_at if best is not None and best.affirming(now) else None,
            available=any(c.dispatchable(now) for c in conns),
            queue_depth=depth,
        )


def _key(device: RegisteredDevice) -> str:
    return device.device_id
