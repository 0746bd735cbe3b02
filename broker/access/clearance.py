"""The clearance gate: builds a Cedar request from the registries and asks the policy engine.

The broker is the policy enforcement point at three places: submit (fail fast), right before
dispatch (a clearance changed since submit means DENIED) and every read of a device (a caller
never learns that a device above their visibility exists). The decision point is the Cedar
engine in `broker.policy`; attribute sources are the access registry (principals, device
operating state and reservations), the device registry (tier, status) and attestation (export
class, attestation status).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from broker.access.facility import FacilityRef
from broker.access.model import Principal
from broker.access.registry import AccessRegistry
from broker.devices.model import DeviceRecord
from broker.devices.registry import DeviceRegistry
from broker.policy import (
    Action,
    DeviceAttributes,
    Environment,
    JobAttributes,
    PolicyEngine,
    PolicyRequest,
    PrincipalAttributes,
)

log = logging.getLogger(__name__)

RULE_UNKNOWN_PRINCIPAL = "principal.unknown"


@dataclass(frozen=True, kw_only=True, slots=True)
class Decision:
    """Allow or deny, with the rule that decided and a reason a person can act on."""

    allowed: bool
    rule_id: str
    reason: str


class ClearanceGate:
    def __init__(
        self,
        *,
        engine: PolicyEngine,
        facility: FacilityRef,
        registry: DeviceRegistry,
        access: AccessRegistry,
    ) -> None:
        self.engine = engine
        self.facility = facility
        self.registry = registry
        self.access = access

    def check(
        self,
        action: Action,
        principal_name: str,
        device: DeviceRecord,
        *,
        now: float,
        job: JobAttributes | None = None,
        attestation: str = "none",
    ) -> Decision:
        principal = self.access.principal(principal_name)
        if principal is None:
            return Decision(
                allowed=False,
                rule_id=RULE_UNKNOWN_PRINCIPAL,
                reason=f"principal {principal_name!r} is no longer registered at this facility; "
                "ask a facility operator to restore your access",
            )
        request = self.request(action, principal, device, now=now, job=job, attestation=attestation)
        decision = self.engine.decide(request)
        if decision.errors:
            log.error("policy evaluation errors for %s: %s", decision.rule_id, decision.errors)
        return Decision(
            allowed=decision.allowed,
            rule_id=decision.rule_id,
            reason="; ".join(decision.reasons),
        )

    def request(
        self,
        action: Action,
        principal: Principal,
        device: DeviceRecord,
        *,
        now: float,
        job: JobAttributes | None = None,
        attestation: str = "none",
    ) -> PolicyRequest:
        """The Cedar question for this principal and device, from the live registries."""
        return PolicyRequest(
            principal=self._principal(principal),
            device=self._device(device, now),
            action=action,
            environment=Environment(
                now=int(now),
                attestation=attestation,
                remote_access_is_export=self.facility.current.remote_access_is_export,
            ),
            job=job,
        )

    def visible(self, principal_name: str, device: DeviceRecord, now: float) -> bool:
        return self.check(Action.VIEW_DEVICE, principal_name, device, now=now).allowed

    def _principal(self, principal: Principal) -> PrincipalAttributes:
        facility = self.facility.current
        return PrincipalAttributes(
            name=principal.name,
            tier=principal.tier,
            tier_rank=facility.tier_rank(principal.tier),
            affiliation=principal.affiliation,
            nationality=principal.nationality,
            jurisdictions=principal.jurisdictions,
            projects=frozenset(principal.projects),
            roles=frozenset(role.value for role in principal.roles),
            clearance_expires_at=int(principal.clearance_expires_at or 0),
            training={name: int(expiry) for name, expiry in principal.training.items()},
            licences=principal.licences,
        )

    def _device(self, device: DeviceRecord, now: float) -> DeviceAttributes:
        facility = self.facility.current
        # Quarantine holds the queue in the dispatcher and says why, so it is not a policy state.
        state = self.access.operating_state(device, now)
        reservation = self.access.operations(device.device_id).reservation_at(now)
        exported = self.registry.export_class(device.device_id)
        controlled = exported.export_class != self.registry.export_profile.uncontrolled_class
        return DeviceAttributes(
            device_id=device.device_id,
            tier=device.tier,
            tier_rank=facility.tier_rank(device.tier),
            jurisdiction=facility.jurisdiction,
            export_class=exported.export_class,
            export_licence=facility.export_licence if controlled else "",
            state=state.value,
            reserved_for=frozenset({reservation.project}) if reservation else frozenset(),
            reserved_from=int(reservation.starts_at) if reservation else 0,
            reserved_until=int(reservation.ends_at) if reservation else 0,
        )
