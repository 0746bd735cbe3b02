"""Operator and security actions in domain terms; which role may call each is decided at the
edge by the one table in `broker.roles`.

Revocation is effective at once: the registry marks the device, its connections are dropped,
the dispatch gate refuses it, and a receipt it signs later is refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from broker.access.clearance import ClearanceGate
from broker.access.facility import FacilityRef
from broker.audit.model import AuditEntry, Checkpoint
from broker.devices.model import (
    AttestationRecord,
    DeviceRecord,
    ReferenceScope,
    ReferenceValuesRecord,
)
from broker.devices.registry import DeviceRegistry, ReferenceInput
from broker.errors import BrokerError, ErrorCode, not_found
from broker.jobs.ledger import JobLedger
from broker.link.attestor import Attestor
from broker.policy import Action, JobAttributes
from broker.policy.explain import Explanation
from broker.store.base import RegistryStore

_AUDIT_PAGE = 500


class AdminService:
    def __init__(
        self,
        *,
        facility: FacilityRef,
        registry: DeviceRegistry,
        gate: ClearanceGate,
        attestor: Attestor,
        ledger: JobLedger,
        store: RegistryStore,
        poll_seconds: float = 0.5,
    ) -> None:
        self.facility = facility
        self.registry = registry
        self.gate = gate
        self.attestor = attestor
        self.ledger = ledger
        self.store = store
        self.poll_seconds = poll_seconds

    async def register(self, caller: str, chain_pem: bytes, tier: str, model: str) -> DeviceRecord:
        if tier not in self.facility.current.tiers:
            raise BrokerError(
                ErrorCode.INVALID_ARGUMENT,
                f"tier {tier!r} is not one of {', '.join(self.facility.current.tiers)}",
            )
        return await self.registry.register(caller, chain_pem, tier=tier, model=model)

    async def devices(self, caller: str) -> list[DeviceRecord]:
        return list(self.registry.all())

    async def set_reference(self, caller: str, values: ReferenceInput) -> ReferenceValuesRecord:
        return await self.registry.set_reference(caller, values)

    async def references(
        self, caller: str, scope: ReferenceScope, scope_id: str
    ) -> list[ReferenceValuesRecord]:
        return await self.registry.references(scope, scope_id)

    async def revoke(self, caller: str, device_id: str, reason: str) -> DeviceRecord:
        record = await self.registry.revoke(caller, device_id, reason or f"revoked by {caller}")
        self.ledger.metrics.revocations.labels(device_id).inc()
        await self.attestor.drop_device(device_id, f"device certificate revoked: {reason}")
        return record

    async def release(self, caller: str, device_id: str, reason: str) -> DeviceRecord:
        record = await self.registry.release(caller, device_id, reason)
        self.attestor.on_attested(device_id)
        return record

    async def history(self, caller: str, device_id: str, limit: int) -> list[AttestationRecord]:
        return await self.registry.history(device_id, min(limit or 50, 1000))

    def explain(
        self, caller: str, principal_name: str, device_id: str, action: str, project: str
    ) -> Explanation:
        principal = self.gate.access.principal(principal_name)
        device = self.registry.get(device_id)
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
            job = JobAttributes(project=project or next(iter(principal.projects), ""))
        request = self.gate.request(
            chosen, principal, device, now=self.ledger.clock.now(), job=job, attestation="affirming"
        )
        return self.gate.engine.explain(request)

    async def checkpoints(self, caller: str) -> list[Checkpoint]:
        return await self.ledger.runner.call(self.store.checkpoints)

    async def stream_audit(
        self, caller: str, after_seq: int, follow: bool
    ) -> AsyncIterator[AuditEntry]:
        """Entries after `after_seq`; with `follow`, keep polling for new ones."""
        store = self.ledger.runner.store
        while True:
            page = await self.ledger.runner.call(
                store.audit_entries, after_seq=after_seq, limit=_AUDIT_PAGE
            )
            for entry in page:
                yield entry
                after_seq = entry.seq
            if len(page) < _AUDIT_PAGE:
                if not follow:
                    return
                await asyncio.sleep(self.poll_seconds)
