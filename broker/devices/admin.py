"""Operator and security actions on devices in domain terms; which role may call each is
decided at the edge by the one table in `broker.access.roles`.

Revocation is effective at once: the registry marks the device, its connections are dropped,
the dispatch gate refuses it, and a receipt it signs later is refused.
"""

from __future__ import annotations

from typing import Protocol

from broker.access.clearance import ClearanceGate
from broker.access.facility import FacilityRef
from broker.access.refusals import AccessRefusals
from broker.access.separation import RULE_DEVICE_LOWERING, device_lowering
from broker.clock import Clock
from broker.devices.model import (
    AttestationRecord,
    DeviceRecord,
    ReferenceScope,
    ReferenceValuesRecord,
)
from broker.devices.registry import DeviceRegistry, ReferenceInput
from broker.errors import BrokerError, ErrorCode
from broker.jobs.wakeups import DispatchWakeups
from broker.metrics import BrokerMetrics
from broker.policy.explain import Explanation


class Connections(Protocol):
    """The live driver connections, as revocation needs them (the attestor)."""

    async def drop_device(self, device_id: str, reason: str) -> None:
        """Tell every connection of the device that it is out, and reject it at once."""


class DeviceAdmin:
    def __init__(
        self,
        *,
        facility: FacilityRef,
        registry: DeviceRegistry,
        gate: ClearanceGate,
        connections: Connections,
        wakeups: DispatchWakeups,
        clock: Clock,
        metrics: BrokerMetrics,
        refusals: AccessRefusals,
    ) -> None:
        self._facility = facility
        self._refusals = refusals
        self._registry = registry
        self._gate = gate
        self._connections = connections
        self._wakeups = wakeups
        self._clock = clock
        self._metrics = metrics

    async def register(self, caller: str, chain_pem: bytes, tier: str, model: str) -> DeviceRecord:
        tiers = self._facility.current.tiers
        if tier not in tiers:
            raise BrokerError(
                ErrorCode.INVALID_ARGUMENT, f"tier {tier!r} is not one of {', '.join(tiers)}"
            )
        facility = self._facility.current
        lowered: list[str] = []  # the device a refused re-registration would have lowered

        def protection(old: DeviceRecord, new_tier: str) -> BrokerError | None:
            refusal = device_lowering(old.device_id, old.tier, new_tier, facility)
            if refusal is not None:
                lowered.append(old.device_id)
            return refusal

        try:
            return await self._registry.register(
                caller, chain_pem, tier=tier, model=model, protection=protection
            )
        except BrokerError as exc:
            if exc.rule_id != RULE_DEVICE_LOWERING or not lowered:
                raise
            # Counted and audited one by one: only operators can try, and each is worth a look.
            raise await self._refusals.refuse(
                "device", caller, lowered[0], exc, tier=tier
            ) from None

    def devices(self) -> list[DeviceRecord]:
        return list(self._registry.all())

    async def set_reference(self, caller: str, values: ReferenceInput) -> ReferenceValuesRecord:
        return await self._registry.set_reference(caller, values)

    async def references(self, scope: ReferenceScope, scope_id: str) -> list[ReferenceValuesRecord]:
        return await self._registry.references(scope, scope_id)

    async def revoke(self, caller: str, device_id: str, reason: str) -> DeviceRecord:
        record = await self._registry.revoke(caller, device_id, reason or f"revoked by {caller}")
        self._metrics.revocations.labels(device_id).inc()
        await self._connections.drop_device(device_id, f"device certificate revoked: {reason}")
        return record

    async def release(self, caller: str, device_id: str, reason: str) -> DeviceRecord:
        record = await self._registry.release(caller, device_id, reason)
        self._wakeups.kick(device_id)
        return record

    async def history(self, device_id: str, limit: int) -> list[AttestationRecord]:
        return await self._registry.history(device_id, min(limit or 50, 1000))

    def explain(self, principal: str, device_id: str, action: str, project: str) -> Explanation:
        device = self._registry.get(device_id)
        return self._gate.explain(
            principal, device_id, device, action=action, project=project, now=self._clock.now()
        )
