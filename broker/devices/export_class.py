"""Export-control classes, derived from attested calibration (qubit count and two-qubit error)
against the facility's band table, never typed in by anyone.

Attestation is per connection, and so is the class: each connection's own affirmed evidence
classifies that connection (`classify`), and the dispatch gate decides with the class of the
connection that gets the job. Everything that asks about the device as a whole (submit, device
views and lookups) gets the strictest class among its attested connections; with none attested,
its declared class: the registered qubit count with the error unknown, which the band table
treats conservatively (the strictest class that device could have).

A claimed two-qubit error lowers a class only when the reference values bound it (a
`two_qubit_error` calibration window): a figure nobody checked is treated as unknown, so a device
cannot talk itself out of control. A change of the device's attested class is audited and
counted at once, and the anomaly monitor is told.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from broker.audit.log import AuditLog
from broker.clock import Clock
from broker.devices.registry import DeviceRegistry
from broker.metrics import BrokerMetrics
from broker.policy.export_control import Classification, ExportProfile, classify, crossing


@dataclass(frozen=True, kw_only=True, slots=True)
class AttestedClass:
    """One connection's class, from the calibration its own affirmed evidence claimed.

    `two_qubit_error` is the claim as made (shown to researchers, used by device selection);
    `classification` used it only if the reference values bound it.
    """

    classification: Classification
    two_qubit_error: float | None


class AttestedConnections(Protocol):
    """The classes of a device's connections whose attestation affirms now (the fleet)."""

    def attested_classes(self, device_id: str, now: float) -> list[AttestedClass]: ...


class ExportClasses:
    def __init__(
        self,
        *,
        profile: ExportProfile,
        registry: DeviceRegistry,
        connections: AttestedConnections,
        clock: Clock,
        audit: AuditLog,
        metrics: BrokerMetrics,
        on_crossing: Callable[[str, str, str], None],
    ) -> None:
        self.profile = profile
        self._registry = registry
        self._connections = connections
        self._clock = clock
        self._audit = audit
        self._metrics = metrics
        self._on_crossing = on_crossing  # (device, old class, new class)
        # Each device's attested class when it was last audited.
        self._audited: dict[str, Classification] = {}
        # The declared class by registered qubit count (a facility has few counts).
        self._declared: dict[int, Classification] = {}

    def of(self, device_id: str) -> Classification:
        """The device's class now: the strictest of its attested connections', else declared.

        The same steps for a device that has attested, one that has not and an id that names
        none: lookups by id build a stand-in's attributes through here (see
        `ClearanceGate.visible_by_id`), so what this costs must not say which of them it was.
        """
        attested = self._connections.attested_classes(device_id, self._clock.now())
        declared = self._declared_class(self._registry.num_qubits(device_id) or 0)
        return self._strictest(attested) or declared

    def controlled(self, device_id: str) -> bool:
        return self.is_controlled(self.of(device_id))

    def is_controlled(self, classification: Classification) -> bool:
        return classification.export_class != self.profile.uncontrolled_class

    def attested_two_qubit_error(self, device_id: str) -> float | None:
        """The worst two-qubit error the device's attested connections claim (None: none
        attested, or one claims none), so a selector's bound holds whichever gets the job."""
        errors = [a.two_qubit_error for a in self._attested(device_id)]
        if not errors or any(e is None for e in errors):
            return None
        return max(e for e in errors if e is not None)

    def classify(self, num_qubits: int, error: float | None, *, bounded: bool) -> AttestedClass:
        """The class a connection's affirmed calibration gives; `bounded` says the reference
        values hold a window for the two-qubit error (otherwise the claim is not used)."""
        try:
            classification = classify(self.profile, num_qubits, error if bounded else None)
        except ValueError as exc:
            classification = Classification(
                export_class=self.profile.controlled_class,
                band=None,
                reason=f"calibration cannot be classified ({exc}); treated as controlled",
            )
        if not bounded and error is not None and classification.band is not None:
            classification = Classification(
                export_class=classification.export_class,
                band=classification.band,
                reason=f"{classification.reason}; the claimed two-qubit error {error:g} is not "
                "used: the reference values set no window for it",
            )
        return AttestedClass(classification=classification, two_qubit_error=error)

    async def refresh(self, device_id: str) -> None:
        """Audit and count a change of the device's attested class (after an appraisal, and
        every tick, so a connection that dropped or lapsed is seen too)."""
        new = self._strictest(self._attested(device_id))
        if new is None:
            return  # nothing attested: the declared class applies and nothing was claimed
        old = self._audited.get(device_id)
        self._audited[device_id] = new
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

    def _attested(self, device_id: str) -> list[AttestedClass]:
        return self._connections.attested_classes(device_id, self._clock.now())

    def _strictest(self, attested: list[AttestedClass]) -> Classification | None:
        classes = [a.classification for a in attested]
        controlled = [c for c in classes if self.is_controlled(c)]
        chosen = controlled or classes
        return chosen[0] if chosen else None

    def _declared_class(self, num_qubits: int) -> Classification:
        found = self._declared.get(num_qubits)
        if found is None:
            found = self._declared[num_qubits] = classify(self.profile, num_qubits, None)
        return found
