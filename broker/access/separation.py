"""Separation of duties for principal records: nobody changes their own record, and an
operator's edit never raises anyone's access. A higher tier, the operator, security, approver or
scraper role, or a licence comes only through an access request approved by someone else
(`broker.access.requests`), and expires by itself.

An edit that makes a principal's nationality one of their jurisdictions (what the
export-jurisdiction rule exempts, as a licence would) is refused as well. Lowering or removing
stays a direct edit, and so do the fields an operator is meant to keep (projects, affiliation,
quotas, training, and clearance review: the policy tells researchers to ask an operator). The
check is made against the exact record version the edit replaces (the write is compare-and-set
on that version); creating a principal counts as editing an empty record at the facility's
lowest tier, so removing and re-creating cannot raise a tier.

The same holds for a device's protection: re-registering a device cannot lower its tier (that
would show it, and dispatch to it, to principals cleared only for the lower tier). Access to a
device above a researcher's clearance comes through an approved, expiring device grant instead.
"""

from __future__ import annotations

from broker.access.facility import Facility
from broker.access.model import GRANTABLE_ROLES, Principal
from broker.errors import BrokerError, ErrorCode

RULE_SELF_EDIT = "access.self-edit"
RULE_ELEVATION = "access.elevation"
RULE_DEVICE_LOWERING = "access.device-lowering"


def self_edit(caller: str, subject: str, verb: str) -> BrokerError | None:
    """The refusal of a caller changing their own record, or None."""
    if caller != subject:
        return None
    return BrokerError(
        ErrorCode.PERMISSION_DENIED,
        f"you cannot {verb} your own principal record; another operator must",
        rule_id=RULE_SELF_EDIT,
    )


def elevations(before: Principal | None, after: Principal, facility: Facility) -> list[str]:
    """What `after` raises over `before` (None: a new record), as request flags, e.g.
    ["--tier restricted", "--role operator"]; empty when the edit raises nothing."""
    tiers = facility.tiers
    old_tier = before.tier if before is not None else tiers[0]
    old_roles = before.roles if before is not None else frozenset()
    old_licences = before.licences if before is not None else frozenset()
    raised: list[str] = []
    old_rank = tiers.index(old_tier) if old_tier in tiers else -1
    if after.tier in tiers and tiers.index(after.tier) > old_rank:
        raised.append(f"--tier {after.tier}")
    added = sorted(r.value for r in after.roles - old_roles if r in GRANTABLE_ROLES)
    raised += [f"--role {role}" for role in added]
    raised += [f"--licence {name}" for name in sorted(after.licences - old_licences)]
    if before is not None:
        raised += [f"--jurisdiction {j}" for j in sorted(_exempt(after) - _exempt(before))]
    return raised


def _exempt(principal: Principal) -> frozenset[str]:
    """Jurisdictions whose export-controlled devices the export-jurisdiction rule lets this
    principal reach without a licence: their nationality, when also one of their jurisdictions.
    Gaining one by an edit (nationality or jurisdictions changed) is worth a licence, so it is an
    elevation too: the export-compliance officer changes it in the facility file."""
    nationality = principal.nationality
    return (
        frozenset({nationality}) & frozenset(principal.jurisdictions)
        if nationality
        else frozenset()
    )


def elevation_refusal(
    before: Principal | None, after: Principal, facility: Facility
) -> BrokerError | None:
    """The refusal of an edit that raises access, naming the request to file instead, or None."""
    raised = elevations(before, after, facility)
    if not raised:
        return None
    base = before or _lowest(after, facility)
    what = ", ".join(raised)
    if raised[0].startswith("--jurisdiction"):
        return BrokerError(
            ErrorCode.PERMISSION_DENIED,
            f"an edit cannot exempt {after.name!r} from export control ({what}: nationality "
            "and jurisdiction would match an export-controlled device's). The facility's "
            "export-compliance officer sets them in the facility file, or requests a licence: "
            f"'qtestbed access request --principal {after.name} --licence NAME ...'",
            rule_id=RULE_ELEVATION,
        )
    return BrokerError(
        ErrorCode.PERMISSION_DENIED,
        f"an edit cannot raise {after.name!r}'s access ({what}; the record holds tier "
        f"{base.tier!r}). Ask for it: 'qtestbed access request --principal {after.name} "
        f"{raised[0]} --for 7d --reason ...'; another principal with the approver role "
        "approves it, and it expires by itself",
        rule_id=RULE_ELEVATION,
    )


def _lowest(after: Principal, facility: Facility) -> Principal:
    return Principal(name=after.name, tier=facility.tiers[0], roles=after.roles)


def device_lowering(
    device_id: str, before_tier: str, after_tier: str, facility: Facility
) -> BrokerError | None:
    """The refusal of a re-registration that lowers a device's tier, naming what to do, or
    None. A tier the facility no longer has ranks above every other: lowering from it is
    refused too (fail closed)."""
    tiers = facility.tiers
    before = tiers.index(before_tier) if before_tier in tiers else len(tiers)
    if after_tier not in tiers or tiers.index(after_tier) >= before:
        return None
    return BrokerError(
        ErrorCode.PERMISSION_DENIED,
        f"re-registering cannot lower device {device_id!r} from tier {before_tier!r} to "
        f"{after_tier!r}: it would become visible and dispatchable to principals cleared only "
        f"for {after_tier!r}. Register it again at tier {before_tier!r} (or higher); to let a "
        f"researcher use it, they ask: 'qtestbed access request --device {device_id} --for 7d "
        "--reason ...', and another principal with the approver role approves it",
        rule_id=RULE_DEVICE_LOWERING,
    )
