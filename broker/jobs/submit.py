"""Submission: a request is validated (device, project, circuit), decided (clearance) and
stored with its audit event in one transaction before the call returns; a batch is queued
whole or not at all, and a refusal names the request's place in it."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import NoReturn

from broker.access.clearance import ClearanceGate
from broker.access.model import Principal, QuotaCheck, QuotaExceeded
from broker.access.quota import Quotas
from broker.anomaly.monitor import AnomalyMonitor
from broker.audit.log import AuditLog
from broker.audit.model import AuditEvent
from broker.clock import Clock
from broker.devices.model import DeviceRecord
from broker.devices.registry import DeviceRegistry
from broker.errors import BrokerError, ErrorCode
from broker.jobs.admission import Held, SubmissionAdmission
from broker.jobs.circuits import CircuitDecoder, CircuitLimits, CircuitRejected, validate_circuit
from broker.jobs.decode_gate import DecodeGate
from broker.jobs.guard import CallerGuard, project_of
from broker.jobs.ledger import JobLedger
from broker.jobs.model import (
    PRIORITIES,
    PRIORITY_NORMAL,
    Circuit,
    IdempotencyKeyReused,
    Job,
    JobState,
)
from broker.jobs.ports import DriverView
from broker.jobs.selection import DeviceSelection, DeviceSelector
from broker.jobs.session_model import Session
from broker.jobs.sessions import SessionManager
from broker.jobs.views import JobView, JobViews
from broker.jobs.wakeups import DispatchWakeups
from broker.metrics import BrokerMetrics
from broker.policy import Action, JobAttributes
from qtestbed.shared.circuits import CircuitFormat

# Most jobs in one SubmitJobs call (a batch is validated, decided and stored as a unit).
MAX_BATCH = 100


@dataclass(frozen=True, kw_only=True, slots=True)
class SubmitRequest:
    device_id: str
    circuit_format: CircuitFormat
    payload: bytes
    shots: int
    idempotency_key: str | None = None
    project: str = ""
    priority: int = PRIORITY_NORMAL
    selector: DeviceSelector | None = None
    session_id: str = ""
    memory: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class _Prepared:
    """A request that passed every check, ready to be stored with its audit event."""

    job: Job
    event: AuditEvent
    quota: QuotaCheck | None


@dataclass(frozen=True, kw_only=True, slots=True)
class SubmitDeps:
    """What submission reads and writes (the composition root fills it once)."""

    clock: Clock
    metrics: BrokerMetrics
    audit: AuditLog
    guard: CallerGuard
    registry: DeviceRegistry
    gate: ClearanceGate
    selection: DeviceSelection
    sessions: SessionManager
    quotas: Quotas
    ledger: JobLedger
    views: JobViews
    drivers: DriverView
    wakeups: DispatchWakeups
    anomalies: AnomalyMonitor
    decoder: CircuitDecoder
    limits: CircuitLimits
    decode_gate: DecodeGate
    admission: SubmissionAdmission


class Submission:
    def __init__(self, deps: SubmitDeps) -> None:
        self._d = deps

    async def submit_many(
        self, caller: str, requests: Sequence[SubmitRequest]
    ) -> list[tuple[JobView, bool]]:
        if not requests:
            raise BrokerError(ErrorCode.INVALID_ARGUMENT, "the batch is empty")
        if len(requests) > MAX_BATCH:
            raise BrokerError(
                ErrorCode.INVALID_ARGUMENT,
                f"a batch holds at most {MAX_BATCH} jobs; this one has {len(requests)}",
            )
        principal = self._d.guard.principal(caller)
        # Before any parsing: a refused call costs the broker next to nothing.
        self._d.admission.admit(caller, len(requests))
        held: list[Held] = []  # places on devices' queues, given back however the call ends
        try:
            return await self._submit_admitted(caller, principal, requests, held)
        finally:
            self._d.admission.release(held)

    async def _submit_admitted(
        self,
        caller: str,
        principal: Principal,
        requests: Sequence[SubmitRequest],
        held: list[Held],
    ) -> list[tuple[JobView, bool]]:
        prepared: list[_Prepared] = []
        for index, request in enumerate(requests):
            try:
                prepared.append(await self._prepare(caller, principal, request, held))
            except BrokerError as exc:
                if len(requests) == 1:
                    raise
                where = f"job {index + 1} of {len(requests)} (nothing in the batch was queued)"
                raise BrokerError(
                    exc.code,
                    f"{where}: {exc.detail}",
                    rule_id=exc.rule_id,
                    retry_after_seconds=exc.retry_after_seconds,
                ) from exc
        try:
            stored = await self._d.ledger.insert_many(
                [(p.job, p.event, p.quota) for p in prepared], place=self._d.views.placed_by_store
            )
        except QuotaExceeded as exc:
            await self._over_quota(caller, exc)
        except IdempotencyKeyReused as exc:
            raise _key_reused(exc, requests) from exc
        accepted = [await self._accepted(job, created, at) for job, created, at in stored]
        # Only what was accepted counts, once per call: a batch is one submission whose size
        # is a signal of its own, and a refused call (nothing queued) is a refusal, counted by
        # the denial detector, not a submission.
        self._d.anomalies.submission(caller, sum(created for _, created, _ in stored))
        return accepted

    async def _accepted(
        self, job: Job, created: bool, position: int | None
    ) -> tuple[JobView, bool]:
        if not created:  # a retry: the idempotency key named this same earlier request
            return await self._d.views.view(job), False
        if job.session_id:
            self._d.sessions.touch(job.session_id, submitted=True)
        self._d.wakeups.kick(job.device_id)
        return await self._d.views.queued(job, position=position), True

    async def _prepare(
        self,
        caller: str,
        principal: Principal,
        request: SubmitRequest,
        held: list[Held],
    ) -> _Prepared:
        """Everything short of storing: device, project, circuit, clearance, quota check; a
        place held on the device's queue is added to `held`."""
        d = self._d
        now = d.clock.now()
        session = d.sessions.for_submit(caller, request.session_id) if request.session_id else None
        if session is None and not request.device_id and request.selector is not None:
            # The broker picks: it must know the circuit's width first.
            circuit = await self._parse(caller, request)
            project = project_of(principal, request.project)
            device = d.selection.select(
                caller,
                request.selector,
                project,
                now,
                width=circuit.num_qubits,
                own_project=project in principal.projects,
            )
            await self._device_room(caller, principal, request, device, project, held)
        else:
            device, project = self._target(caller, principal, request, session, now)
            await self._device_room(caller, principal, request, device, project, held)
            circuit = await self._parse(caller, request)
        if request.priority not in PRIORITIES:
            raise BrokerError(ErrorCode.INVALID_ARGUMENT, "priority must be LOW, NORMAL or HIGH")
        self._check_fits(circuit, device)
        decision = d.gate.check(
            Action.SUBMIT_JOB,
            caller,
            device,
            now=now,
            job=JobAttributes(project=project, shots=request.shots, qubits=circuit.num_qubits),
            attestation="affirming" if d.drivers.attested(device.device_id, now) else "none",
        )
        if not decision.allowed:
            await d.guard.refuse(caller, device, decision)
        job = Job(
            job_id=uuid.uuid4().hex,
            owner=caller,
            device_id=device.device_id,
            circuit=circuit,
            shots=request.shots,
            state=JobState.QUEUED,
            created_at=now,
            updated_at=now,
            idempotency_key=request.idempotency_key or None,
            project=project,
            priority=request.priority,
            session_id=session.session_id if session is not None else "",
            memory=request.memory,
        )
        return _Prepared(
            job=job,
            event=d.audit.event("job.submitted", caller, job.job_id, _submitted(job)),
            quota=d.quotas.check(principal, project, now),
        )

    async def _device_room(
        self,
        caller: str,
        principal: Principal,
        request: SubmitRequest,
        device: DeviceRecord,
        project: str,
        held: list[Held],
    ) -> None:
        """The device's queue bound, asked only once the device is known visible to the caller
        and only for a project the caller belongs to: what it answers about the device's queue
        and the project's share must not reach anyone else. A project not the caller's is
        refused by the clearance check that follows, as without a bound.

        The bound limits new jobs only: a retry whose idempotency key names a job the caller
        already stored is let through (no place held), and the insert answers it with that job
        (or refuses it as a different request), so a client whose answer was lost learns its
        job id even while the device is full."""
        if project not in principal.projects:
            return
        admission = self._d.admission
        key = request.idempotency_key
        if (
            key
            and not admission.has_room(device.device_id, project)
            and await self._d.ledger.by_idempotency_key(caller, key) is not None
        ):
            return
        place = admission.device_room(caller, device.device_id, project)
        if place is not None:
            held.append(place)

    def _target(
        self,
        caller: str,
        principal: Principal,
        request: SubmitRequest,
        session: Session | None,
        now: float,
    ) -> tuple[DeviceRecord, str]:
        """The device and project a request is for: its session's, named, or selected."""
        guard = self._d.guard
        if session is not None:
            if request.device_id and request.device_id != session.device_id:
                raise BrokerError(
                    ErrorCode.INVALID_ARGUMENT,
                    f"session {session.session_id} holds device {session.device_id}, not "
                    f"{request.device_id}; leave device_id empty or name the session's device",
                )
            return guard.device(caller, session.device_id, now), session.project
        if request.device_id:
            device = guard.device(caller, request.device_id, now)
            return device, project_of(principal, request.project)
        raise BrokerError(
            ErrorCode.INVALID_ARGUMENT,
            "name a device (device_id), describe one (selector) or give a session_id",
        )

    async def _parse(self, caller: str, request: SubmitRequest) -> Circuit:
        """Parse off the event loop, in the isolated decoders, within the caller's share of
        them (`DecodeGate`): hostile payloads can't stall us or other principals."""
        d = self._d
        validate = partial(
            validate_circuit,
            request.circuit_format,
            request.payload,
            request.shots,
            d.limits,
            decoder=d.decoder,
            memory=request.memory,
        )
        try:
            return await d.decode_gate.run(caller, validate)
        except CircuitRejected as exc:
            d.metrics.rejections.labels(exc.field).inc()
            raise BrokerError(ErrorCode.INVALID_ARGUMENT, str(exc)) from exc

    def _check_fits(self, circuit: Circuit, device: DeviceRecord) -> None:
        capacity = self._d.registry.num_qubits(device.device_id) or 0
        if circuit.num_qubits > capacity:
            self._d.metrics.rejections.labels("circuit").inc()
            raise BrokerError(
                ErrorCode.INVALID_ARGUMENT,
                f"circuit uses {circuit.num_qubits} qubits but device {device.device_id!r} has "
                f"{capacity}; choose a larger device or a smaller circuit",
            )

    async def _over_quota(self, caller: str, exc: QuotaExceeded) -> NoReturn:
        limit = "active_jobs" if exc.what == "active jobs" else "shots_per_day"
        self._d.metrics.quota_rejections.labels(exc.scope, limit).inc()
        detail = {"scope": exc.scope, "name": exc.name, "limit": limit, "max": exc.limit}
        await self._d.audit.record("quota.exceeded", caller, "", detail)
        if limit == "active_jobs":
            advice = "wait for one of them to finish or cancel one"
        else:
            advice = (
                f"{max(exc.limit - exc.used, 0)} shots remain in the rolling 24 hours; "
                "submit fewer shots or wait"
            )
        raise BrokerError(
            ErrorCode.RESOURCE_EXHAUSTED,
            f"quota reached for {exc.scope} {exc.name!r}: at most {exc.limit} {exc.what} "
            f"({exc.used} in use); {advice}; 'qtestbed quota' shows what remains",
            rule_id=f"quota.{exc.scope}.{limit}",
        )


def _submitted(job: Job) -> dict[str, object]:
    detail: dict[str, object] = {
        "device": job.device_id,
        "circuit_digest": job.circuit.digest,
        "shots": job.shots,
        "project": job.project,
    }
    if job.session_id:
        detail["session"] = job.session_id
    if job.memory:
        detail["memory"] = True
    return detail


def _key_reused(exc: IdempotencyKeyReused, requests: Sequence[SubmitRequest]) -> BrokerError:
    """The refusal of a batch in which one key names an earlier, different request."""
    detail = (
        f"idempotency key {exc.key!r} was already used for job {exc.existing_job_id} with a "
        "different device, circuit or shot count; use a new key"
    )
    if len(requests) > 1:
        index = next(i for i, r in enumerate(requests) if r.idempotency_key == exc.key)
        detail = f"job {index + 1} of {len(requests)} (nothing in the batch was queued): {detail}"
    return BrokerError(ErrorCode.FAILED_PRECONDITION, detail)
