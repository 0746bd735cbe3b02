"""Clearance decisions: may this principal run work on this device now?

The decision is pure (facility snapshot, principal name, device, time in; decision out) so the
same function serves the submit check and the re-check right before dispatch. Every denial
names the rule that decided it and tells the researcher what would grant access.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from broker.facility import Facility
from broker.registry_model import DeviceRecord

RULE_UNKNOWN_PRINCIPAL = "principal.unknown"
RULE_CLEARANCE_EXPIRED = "clearance.expired"
RULE_TIER_BELOW_DEVICE = "clearance.tier-below-device"


@dataclass(frozen=True, kw_only=True, slots=True)
class Decision:
    """Allow or deny, with the rule that decided and a reason a person can act on."""

    allowed: bool
    rule_id: str
    reason: str


def decide(facility: Facility, principal_name: str, device: DeviceRecord, now: float) -> Decision:
    principal = facility.principals.get(principal_name)
    if principal is None:
        return Decision(
            allowed=False,
            rule_id=RULE_UNKNOWN_PRINCIPAL,
            reason=f"principal {principal_name!r} is no longer registered at this facility; "
            "ask a facility operator to restore your access",
        )
    if principal.clearance_expires_at is not None and now >= principal.clearance_expires_at:
        expired = dt.datetime.fromtimestamp(principal.clearance_expires_at, dt.UTC)
        return Decision(
            allowed=False,
            rule_id=RULE_CLEARANCE_EXPIRED,
            reason=f"your clearance expired at {expired.isoformat()}; "
            "ask a facility operator to review and renew it",
        )
    if facility.tier_rank(principal.tier) < facility.tier_rank(device.tier):
        return Decision(
            allowed=False,
            rule_id=RULE_TIER_BELOW_DEVICE,
            reason=f"device {device.device_id!r} requires clearance tier {device.tier!r} "
            f"and yours is {principal.tier!r}; a facility operator can review your clearance",
        )
    return Decision(allowed=True, rule_id="clearance.tier-sufficient", reason="")
