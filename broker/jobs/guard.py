"""Who is calling and what they may see, for every job and session call: one NOT_FOUND for
absent and hidden devices, one way a clearance refusal is counted, audited and told."""

from __future__ import annotations

from typing import NoReturn

from broker.access.clearance import ClearanceGate, Decision
from broker.access.grants import Grants
from broker.access.model import Principal, Role
from broker.anomaly.monitor import AnomalyMonitor
from broker.audit.log import AuditLog
from broker.devices.model import DeviceRecord, DeviceStatus
from broker.devices.registry import DeviceRegistry
from broker.errors import BrokerError, ErrorCode, not_found
from broker.metrics import BrokerMetrics


class CallerGuard:
    def __init__(
        self,
        *,
        grants: Grants,
        registry: DeviceRegistry,
        gate: ClearanceGate,
        anomalies: AnomalyMonitor,
        audit: AuditLog,
        metrics: BrokerMetrics,
    ) -> None:
        self._grants = grants
        self._registry = registry
        self._gate = gate
        self._anomalies = anomalies
        self._audit = audit
        self._metrics = metrics

    def principal(self, name: str) -> Principal:
        """The caller as their grants in force make them (roles, tier, licences)."""
        principal = self._grants.principal(name)
        if principal is None:
            raise BrokerError(
                ErrorCode.UNAUTHENTICATED,
                f"{name!r} is not a registered principal of this facility; "
                "ask an operator to register your certificate",
            )
        return principal

    def is_operator(self, name: str) -> bool:
        return Role.OPERATOR in self.principal(name).roles

    def still_operator(self, name: str) -> bool:
        """Whether `name` is an operator now (False, not an error, if no longer registered)."""
        found = self._grants.principal(name)
        return found is not None and Role.OPERATOR in found.roles

    def device(self, caller: str, device_id: str, now: float) -> DeviceRecord:
        """The device if it exists and the caller may see it; the same NOT_FOUND otherwise,
        after the same work: visibility is decided whether or not the device exists (see
        `ClearanceGate.visible_by_id`), and nothing is decided on before it is."""
        device = self._registry.get(device_id)
        visible = self._gate.visible_by_id(caller, device_id, device, now)
        if device is None or not visible or device.status is DeviceStatus.REVOKED:
            self._anomalies.refusal(caller)
            raise not_found("device", device_id)
        return device

    async def refuse(self, caller: str, device: DeviceRecord, decision: Decision) -> NoReturn:
        """A clearance denial at submit: counted, audited, and told with its rule."""
        self._metrics.denials.labels(decision.rule_id, "submit").inc()
        self._anomalies.refusal(caller)
        detail = {
            "stage": "submit",
            "rule": decision.rule_id,
            "device": device.device_id,
            "reason": decision.reason,
        }
        await self._audit.record("clearance.denied", caller, "", detail)
        raise BrokerError(
            ErrorCode.PERMISSION_DENIED,
            f"denied by rule {decision.rule_id}: {decision.reason}",
            rule_id=decision.rule_id,
        )


def project_of(principal: Principal, requested: str) -> str:
    """The project a job runs under: as asked, or the principal's only project."""
    if requested:
        return requested
    if len(principal.projects) == 1:
        return principal.projects[0]
    choices = ", ".join(principal.projects) or "none on record"
    raise BrokerError(
        ErrorCode.INVALID_ARGUMENT,
        f"name the project this job belongs to (your projects: {choices})",
    )
