"""Device selection: SubmitJob may describe a device instead of naming one; the broker picks,
among attested devices the caller may use, the one with the shortest expected wait, preferring
those whose queue bound takes the job ([admission] max_queued_per_device)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from broker.access.clearance import ClearanceGate
from broker.devices.export_class import ExportClasses
from broker.devices.model import DeviceProfile, DeviceRecord, DeviceStatus
from broker.devices.operations import DeviceSchedule
from broker.devices.registry import DeviceRegistry
from broker.errors import BrokerError, ErrorCode
from broker.jobs.ports import DriverView
from broker.jobs.scheduler import Scheduler
from broker.policy import Action, JobAttributes


@dataclass(frozen=True, kw_only=True, slots=True)
class DeviceSelector:
    """Choose a device by what it offers; the broker picks among eligible, attested ones."""

    min_qubits: int = 0
    basis_gates: frozenset[str] = frozenset()
    tier: str = ""
    max_two_qubit_error: float = 0.0

    def describe(self) -> str:
        return (
            f"min_qubits={self.min_qubits}, basis_gates={sorted(self.basis_gates)}, "
            f"tier={self.tier or 'any'}, max_two_qubit_error={self.max_two_qubit_error or 'any'}"
        )


class DeviceSelection:
    def __init__(
        self,
        *,
        registry: DeviceRegistry,
        gate: ClearanceGate,
        schedule: DeviceSchedule,
        exports: ExportClasses,
        scheduler: Scheduler,
        drivers: DriverView,
        has_room: Callable[[str, str], bool],
    ) -> None:
        self._registry = registry
        self._has_room = has_room
        self._gate = gate
        self._schedule = schedule
        self._exports = exports
        self._scheduler = scheduler
        self._drivers = drivers

    def select(
        self,
        caller: str,
        selector: DeviceSelector,
        project: str,
        now: float,
        *,
        width: int = 0,
        own_project: bool = True,
    ) -> DeviceRecord:
        """The eligible device with the shortest expected wait, among those with at least
        `width` qubits (the circuit's), one that takes the project's job first (a device at its
        queue bound is picked only when all are, and then refuses); NOT_FOUND (naming what was
        asked, never what exists) when none the caller may use satisfies the selector. A project
        the caller does not belong to (`own_project` False) is never asked about: which device is
        picked must not tell how full another project is."""
        candidates = []
        for device in self._registry.all():
            if (self._registry.num_qubits(device.device_id) or 0) < width:
                continue
            if not self._eligible(caller, device, selector, now):
                continue
            decision = self._gate.check(
                Action.SUBMIT_JOB,
                caller,
                device,
                now=now,
                job=JobAttributes(project=project),
                attestation="affirming",
            )
            if decision.allowed:
                wait = self._scheduler.depth(device.device_id) * self._scheduler.seconds_per_job(
                    device.device_id
                )
                full = own_project and not self._has_room(device.device_id, project)
                candidates.append((full, wait, device.device_id, device))
        if not candidates:
            raise BrokerError(
                ErrorCode.NOT_FOUND,
                f"no attested device you may use matches the selector now ({selector.describe()});"
                " relax it or try later",
            )
        return min(candidates, key=lambda c: c[:3])[3]

    def _eligible(
        self, caller: str, device: DeviceRecord, selector: DeviceSelector, now: float
    ) -> bool:
        if device.status is not DeviceStatus.ACTIVE or not self._gate.visible(caller, device, now):
            return False
        profile = self._drivers.profile(device.device_id, now)
        if profile is None:
            return False  # no attested driver now
        return _offers(profile, device, selector, self._exports) and (
            self._schedule.availability(device.device_id, now).runs_jobs
        )


def _offers(
    profile: DeviceProfile, device: DeviceRecord, selector: DeviceSelector, exports: ExportClasses
) -> bool:
    error = exports.attested_two_qubit_error(device.device_id)
    return not (
        (selector.min_qubits and profile.num_qubits < selector.min_qubits)
        or not selector.basis_gates <= set(profile.basis_gates)
        or (selector.tier and device.tier != selector.tier)
        or (
            selector.max_two_qubit_error and (error is None or error > selector.max_two_qubit_error)
        )
    )
