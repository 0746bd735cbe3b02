"""The clearance gate: builds a Cedar request from the registries and asks the policy engine.

The broker is the policy enforcement point at three places: submit (fail fast), right before
dispatch (a clearance changed since submit means DENIED) and every read of a device (a caller
never learns that a device above their visibility exists). The decision point is the Cedar
engine in `broker.policy`; attribute sources are the access records (principals with their
grants in force, `broker.access.grants`), the device schedule (operating state and
reservations), the device registry (tier, status) and attestation (export class, attestation
status).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from broker.access.facility import Facility, FacilityRef
from broker.access.grants import Effective, Grants
from broker.devices.export_class import ExportClasses
from broker.devices.model import DeviceRecord, stand_in
from broker.devices.operations import DeviceSchedule
from broker.errors import BrokerError, ErrorCode, not_found
from broker.policy import (
    Action,
    DeviceAttributes,
    Environment,
    JobAttributes,
    PolicyEngine,
    PolicyRequest,
    PrincipalAttributes,
)
from broker.policy.explain import Explanation
from broker.policy.export_control import Classification

log = logging.getLogger(__name__)

RULE_UNKNOWN_PRINCIPAL = "principal.unknown"


@dataclass(frozen=True, kw_only=True, slots=True)
class Decision:
    """Allow or deny, with the rule that decided and a reason a person can act on."""

    allowed: bool
    rule_id: str
    reason: str


def principal_attributes(subject: Effective, facility: Facility) -> PrincipalAttributes:
    """The Cedar form of a principal as its grants in force make it, with its tier's rank at
    this facility and the devices granted to it above its tier."""
    principal = subject.principal
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
        granted_devices=subject.granted_devices,
    )


class ClearanceGate:
    def __init__(
        self,
        *,
        engine: PolicyEngine,
        facility: FacilityRef,
        grants: Grants,
        schedule: DeviceSchedule,
        exports: ExportClasses,
    ) -> None:
        self._engine = engine
        self._facility = facility
        self._grants = grants
        self._schedule = schedule
        self._exports = exports

    @property
    def engine(self) -> PolicyEngine:
        return self._engine

    def use_engine(self, engine: PolicyEngine) -> None:
        """Decide with a new, validated policy set from now on (SIGHUP reload)."""
        self._engine = engine

    def check(
        self,
        action: Action,
        principal_name: str,
        device: DeviceRecord,
        *,
        now: float,
        job: JobAttributes | None = None,
        attestation: str = "none",
        export_class: Classification | None = None,
    ) -> Decision:
        """Decide `action`; `export_class` is the class of the connection a job would go to
        (dispatch), else the device's own (the strictest of its attested connections)."""
        principal = self._grants.effective(principal_name, now)
        if principal is None:
            return Decision(
                allowed=False,
                rule_id=RULE_UNKNOWN_PRINCIPAL,
                reason=f"principal {principal_name!r} is no longer registered at this facility; "
                "ask a facility operator to restore your access",
            )
        request = self.request(
            action,
            principal,
            device,
            now=now,
            job=job,
            attestation=attestation,
            export_class=export_class,
        )
        decision = self._engine.decide(request)
        if decision.errors:
            log.error("policy evaluation errors for %s: %s", decision.rule_id, decision.errors)
        return Decision(
            allowed=decision.allowed,
            rule_id=decision.rule_id,
            reason="; ".join(decision.reasons),
        )

    def visible(self, principal_name: str, device: DeviceRecord, now: float) -> bool:
        return self.check(Action.VIEW_DEVICE, principal_name, device, now=now).allowed

    def visible_by_id(
        self, principal_name: str, device_id: str, device: DeviceRecord | None, now: float
    ) -> bool:
        """Whether the caller may see the device they named: `device` is the registry's record
        of `device_id`, None when there is none. Hidden and absent do the same work: an absent
        id is decided against a stand-in at the facility's highest tier (hidden from whoever a
        tier hides devices from, like the devices it stands in for), built from the same
        registries by the same `request`, and asked as a `verdict`, whose cost and caching do
        not depend on the answer or on whether the device exists. Its answer is then ignored."""
        record = device if device is not None else stand_in(device_id, self._top_tier())
        principal = self._grants.effective(principal_name, now)
        if principal is None:
            return False
        verdict = self._engine.verdict(self.request(Action.VIEW_DEVICE, principal, record, now=now))
        if verdict.errors:
            log.error("policy evaluation errors deciding ViewDevice: %s", verdict.errors)
        return device is not None and verdict.allowed

    def _top_tier(self) -> str:
        return self._facility.current.tiers[-1]

    def request(
        self,
        action: Action,
        principal: Effective,
        device: DeviceRecord,
        *,
        now: float,
        job: JobAttributes | None = None,
        attestation: str = "none",
        export_class: Classification | None = None,
    ) -> PolicyRequest:
        """The Cedar question for this principal and device, from the live registries."""
        facility = self._facility.current
        return PolicyRequest(
            principal=principal_attributes(principal, facility),
            device=self._device(device, now, export_class),
            action=action,
            environment=Environment(
                now=int(now),
                attestation=attestation,
                remote_access_is_export=facility.remote_access_is_export,
            ),
            job=job,
        )

    def explain(
        self,
        principal_name: str,
        device_id: str,
        device: DeviceRecord | None,
        *,
        action: str,
        project: str,
        now: float,
    ) -> Explanation:
        """Which requirement allows or refuses the principal on the device (as if attested);
        `device` is the registry's record of `device_id`, None when there is none."""
        principal = self._grants.effective(principal_name, now)
        if principal is None:
            raise not_found("principal", principal_name)
        if device is None:
            raise not_found("device", device_id)
        try:
            chosen = Action(action or Action.SUBMIT_JOB.value)
        except ValueError as exc:
            raise BrokerError(
                ErrorCode.INVALID_ARGUMENT, "action must be SubmitJob, DispatchJob or ViewDevice"
            ) from exc
        job = None
        if chosen is not Action.VIEW_DEVICE:
            job = JobAttributes(project=project or next(iter(principal.principal.projects), ""))
        request = self.request(chosen, principal, device, now=now, job=job, attestation="affirming")
        return self._engine.explain(request)

    def _device(
        self, device: DeviceRecord, now: float, export_class: Classification | None
    ) -> DeviceAttributes:
        facility = self._facility.current
        # Quarantine holds the queue in the dispatcher and says why, so it is not a policy state.
        state = self._schedule.state(device)
        reservation = state.operations.reservation_at(now)
        exported = export_class or self._exports.of(device.device_id)
        return DeviceAttributes(
            device_id=device.device_id,
            tier=device.tier,
            tier_rank=facility.tier_rank(device.tier),
            jurisdiction=facility.jurisdiction,
            export_class=exported.export_class,
            export_licence=facility.export_licence if self._exports.is_controlled(exported) else "",
            state=state.operating_state(now).value,
            reserved_for=frozenset({reservation.project}) if reservation else frozenset(),
            reserved_from=int(reservation.starts_at) if reservation else 0,
            reserved_until=int(reservation.ends_at) if reservation else 0,
        )
