"""Each device's export-control class, derived from its latest attested calibration (qubit
count and two-qubit error) against the facility's band table, never typed in by anyone.

Until a device has attested it is classified from its registered qubit count with the error
unknown, which the band table treats conservatively. A change of class or band is audited and
counted at once, and the anomaly monitor is told.
"""

from __future__ import annotations

from collections.abc import Callable

from broker.audit.log import AuditLog
from broker.devices.registry import DeviceRegistry
from broker.metrics import BrokerMetrics
from broker.policy.export_control import Classification, ExportProfile, classify, crossing


class ExportClasses:
    def __init__(
        self,
        *,
        profile: ExportProfile,
        registry: DeviceRegistry,
        audit: AuditLog,
        metrics: BrokerMetrics,
        on_crossing: Callable[[str, str, str], None],
    ) -> None:
        self.profile = profile
        self._registry = registry
        self._audit = audit
        self._metrics = metrics
        self._on_crossing = on_crossing  # (device, old class, new class)
        self._classes: dict[str, Classification] = {}
        # Two-qubit gate error from each device's latest attested calibration.
        self._errors: dict[str, float | None] = {}
        # The class of a device not yet attested, by registered qubit count (a facility has few).
        self._unattested: dict[int, Classification] = {}

    def of(self, device_id: str) -> Classification:
        """The device's class now (see the module docstring for a device not yet attested).

        The same steps for a device that has attested, one that has not and an id that names
        none: lookups by id build a stand-in's attributes through here (see
        `ClearanceGate.visible_by_id`), so what this costs must not say which of them it was.
        """
        known = self._classes.get(device_id)
        assumed = self._assumed(self._registry.num_qubits(device_id) or 0)
        return known if known is not None else assumed

    def _assumed(self, num_qubits: int) -> Classification:
        found = self._unattested.get(num_qubits)
        if found is None:
            found = self._unattested[num_qubits] = classify(self.profile, num_qubits, None)
        return found

    def controlled(self, device_id: str) -> bool:
        return self.of(device_id).export_class != self.profile.uncontrolled_class

    def attested_two_qubit_error(self, device_id: str) -> float | None:
        return self._errors.get(device_id)

    async def classify(self, device_id: str, num_qubits: int, error: float | None) -> None:
        """Re-classify from fresh attested calibration; audit and count a crossing."""
        try:
            new = classify(self.profile, num_qubits, error)
        except ValueError as exc:
            new = Classification(
                export_class=self.profile.controlled_class,
                band=None,
                reason=f"calibration cannot be classified ({exc}); treated as controlled",
            )
        old = self._classes.get(device_id)
        self._classes[device_id] = new
        self._errors[device_id] = error
        change = crossing(old, new)
        if change is None:
            return
        detail = {
            "from": old.export_class if old is not None else None,
            "to": new.export_class,
            "band": new.band.label if new.band is not None else None,
            "reason": change,
        }
        await self._audit.record("device.export_class", "broker", device_id, detail)
        if old is not None:
            self._metrics.export_crossings.labels(
                device_id, old.export_class, new.export_class
            ).inc()
            self._on_crossing(device_id, old.export_class, new.export_class)
