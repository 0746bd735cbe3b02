"""The effective principal: the record plus the grants in force at a moment.

Every decision about what a principal may do reads this, never the bare record: the clearance
gate (submit, dispatch, device reads, explain), the job services and the edge's role table. A
grant counts until its own expiry time (`AccessRequest.in_force`), so it stops counting the
second it expires, whether or not the broker's tick has written it as EXPIRED yet.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from broker.access.facility import Facility
from broker.access.model import AccessRequest, Elevation, Principal, Role
from broker.access.records import AccessRecords
from broker.clock import Clock


@dataclass(frozen=True, kw_only=True, slots=True)
class Effective:
    """A principal as its grants make it now: `principal` with the highest tier, the roles
    and licences granted, and the devices granted above its tier."""

    principal: Principal
    granted_devices: frozenset[str]
    grants: tuple[AccessRequest, ...]


def effective(
    record: Principal, grants: Iterable[AccessRequest], now: float, facility: Facility
) -> Effective:
    """The record raised by every grant of `grants` in force at `now` (pure)."""
    active = tuple(g for g in grants if g.principal == record.name and g.in_force(now))
    if not active:
        return Effective(principal=record, granted_devices=frozenset(), grants=())
    tier = record.tier
    for grant in active:
        if grant.kind is Elevation.TIER and _rank(facility, grant.value) > _rank(facility, tier):
            tier = grant.value
    raised = dataclasses.replace(
        record,
        tier=tier,
        roles=record.roles | {Role(g.value) for g in active if g.kind is Elevation.ROLE},
        licences=record.licences | {g.value for g in active if g.kind is Elevation.LICENCE},
    )
    devices = frozenset(g.value for g in active if g.kind is Elevation.DEVICE)
    return Effective(principal=raised, granted_devices=devices, grants=active)


def _rank(facility: Facility, tier: str) -> int:
    """The tier's rank; -1 for a tier the facility no longer has (it raises nothing)."""
    return facility.tiers.index(tier) if tier in facility.tiers else -1


class Grants:
    """Effective principals from the live access snapshot."""

    def __init__(
        self, records: AccessRecords, *, clock: Clock, facility: Callable[[], Facility]
    ) -> None:
        self._records = records
        self._clock = clock
        self._facility = facility

    def effective(self, name: str, now: float | None = None) -> Effective | None:
        """None when no such principal is registered."""
        snapshot = self._records.snapshot
        record = snapshot.principals.get(name)
        if record is None:
            return None
        at = self._clock.now() if now is None else now
        return effective(record, snapshot.grants.get(name, ()), at, self._facility())

    def principal(self, name: str, now: float | None = None) -> Principal | None:
        found = self.effective(name, now)
        return found.principal if found is not None else None
