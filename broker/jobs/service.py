"""The job service in domain terms: dataclasses in, dataclasses out, BrokerError on refusal.

The gRPC servicers translate to and from protobuf and call only this.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import NoReturn

from attestation.dsse import Envelope
from attestation.receipts import decode_receipt
from broker.access.clearance import ClearanceGate, Decision
from broker.access.facility import FacilityRef
from broker.access.model import Principal, QuotaCheck, QuotaExceeded, Role
from broker.access.registry import AccessRegistry, QuotaStatus
from broker.anomaly.monitor import AnomalyMonitor
from broker.audit.model import AuditEvent
from broker.devices.model import DeviceRecord, DeviceStatus
from broker.devices.registry import DeviceRegistry
from broker.errors import BrokerError, ErrorCode, not_found
from broker.jobs.circuits import CircuitDecoder, CircuitLimits, CircuitRejected, validate_circuit
from broker.jobs.ledger import JobLedger
from broker.jobs.model import (
    PRIORITY_HIGH,
    PRIORITY_LOW,
    PRIORITY_NORMAL,
    Circuit,
    Job,
    JobResult,
    JobState,
)
from broker.jobs.scheduler import Scheduler, eta_seconds
from broker.jobs.session_model import Session
from broker.jobs.sessions import SessionManager
from broker.link.dispatcher import Dispatcher
from broker.policy import Action, JobAttributes
from broker.policy.attributes import format_time
from qtestbed.shared.circuits import CircuitFormat


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


@dataclass(frozen=True, kw_only=True, slots=True)
class DeviceSelector:
    """Choose a device by what it offers; the broker picks among eligible, attested ones."""

    min_qubits: int = 0
    basis_gates: frozenset[str] = frozenset()
    tier: str = ""
    max_two_qubit_error: float = 0.0


@dataclass(frozen=True, kw_only=True, slots=True)
class JobView:
    """A job as its owner sees it: with its live queue position (0 when not queued)."""

    job: Job
    queue_position: int
    waiting_for: str = ""
    eta: float | None = None
    device_queue_depth: int = 0


@dataclass(frozen=True, kw_only=True, slots=True)
class _Prepared:
    """A request that passed every check, ready to be stored with its audit event."""

    job: Job
    event: AuditEvent
    quota: QuotaCheck | None
    session_id: str


# Most jobs in one SubmitJobs call (a batch is validated, decided and stored as a unit).
MAX_BATCH = 100


@dataclass(frozen=True, kw_only=True, slots=True)
class ResultView:
    result: JobResult
    device_certificate: bytes
    evidence: bytes


class JobService:
    def __init__(
        self,
        *,
        facility: FacilityRef,
        registry: DeviceRegistry,
        gate: ClearanceGate,
        ledger: JobLedger,
        dispatcher: Dispatcher,
        limits: CircuitLimits,
        decoder: CircuitDecoder,
        access: AccessRegistry,
        anomalies: AnomalyMonitor,
        scheduler: Scheduler,
        sessions: SessionManager,
    ) -> None:
        self.scheduler = scheduler
        self.sessions = sessions
        self.access = access
        self.anomalies = anomalies
        self.decoder = decoder
        self.registry = registry
        self.gate = gate
        self.facility = facility
        self.ledger = ledger
        self.dispatcher = dispatcher
        self.limits = limits
        self.store = ledger.runner.store

    def principal(self, name: str) -> Principal:
        principal = self.access.principal(name)
        if principal is None:
            raise BrokerError(
                ErrorCode.UNAUTHENTICATED,
                f"{name!r} is not a registered principal of this facility; "
                "ask an operator to register your certificate",
            )
        return principal

    async def submit(self, caller: str, request: SubmitRequest) -> tuple[JobView, bool]:
        return (await self.submit_many(caller, [request]))[0]

    async def submit_many(
        self, caller: str, requests: Sequence[SubmitRequest]
    ) -> list[tuple[JobView, bool]]:
        """Validate and decide every request, then store them all in one transaction: a batch
        is queued whole or not at all. A refusal names the request's place in the batch."""
        if not requests:
            raise BrokerError(ErrorCode.INVALID_ARGUMENT, "the batch is empty")
        if len(requests) > MAX_BATCH:
            raise BrokerError(
                ErrorCode.INVALID_ARGUMENT,
                f"a batch holds at most {MAX_BATCH} jobs; this one has {len(requests)}",
            )
        principal = self.principal(caller)
        prepared = []
        for index, request in enumerate(requests):
            try:
                prepared.append(await self._prepare(caller, principal, request))
            except BrokerError as exc:
                if len(requests) == 1:
                    raise
                where = f"job {index + 1} of {len(requests)} (nothing in the batch was queued)"
                raise BrokerError(exc.code, f"{where}: {exc.detail}", rule_id=exc.rule_id) from exc
        try:
            stored = await self.ledger.insert_many([(p.job, p.event, p.quota) for p in prepared])
        except QuotaExceeded as exc:
            await self._over_quota(caller, exc)
        views = []
        for p, (job, created) in zip(prepared, stored, strict=True):
            if not created:
                _check_same_request(job, p.job)
                views.append((await self._view(job), False))
                continue
            if p.session_id:
                self.sessions.touch(p.session_id, submitted=True)
            self.dispatcher.kick(job.device_id)
            views.append((self._queued_view(job), True))
        return views

    async def _prepare(
        self, caller: str, principal: Principal, request: SubmitRequest
    ) -> _Prepared:
        """Everything short of storing: device, project, circuit, clearance, quota check."""
        self.anomalies.submission(caller)
        now = self.ledger.clock.now()
        session = (
            self.sessions.for_submit(caller, request.session_id) if request.session_id else None
        )
        if session is not None:
            if request.device_id and request.device_id != session.device_id:
                raise BrokerError(
                    ErrorCode.INVALID_ARGUMENT,
                    f"session {session.session_id} holds device {session.device_id}, not "
                    f"{request.device_id}; leave device_id empty or name the session's device",
                )
            device = self._device(session.device_id, caller, now)
            project = session.project
        elif request.device_id:
            device = self._device(request.device_id, caller, now)
            project = _project_of(principal, request.project)
        elif request.selector is not None:
            project = _project_of(principal, request.project)
            device = self._select(caller, request.selector, project, now)
        else:
            raise BrokerError(
                ErrorCode.INVALID_ARGUMENT,
                "name a device (device_id), describe one (selector) or give a session_id",
            )
        if request.priority not in (PRIORITY_LOW, PRIORITY_NORMAL, PRIORITY_HIGH):
            raise BrokerError(ErrorCode.INVALID_ARGUMENT, "priority must be LOW, NORMAL or HIGH")
        circuit = await self._validate(request, device)
        job_attributes = JobAttributes(
            project=project, shots=request.shots, qubits=circuit.num_qubits
        )
        decision = self.gate.check(
            Action.SUBMIT_JOB,
            caller,
            device,
            now=now,
            job=job_attributes,
            attestation=self._attestation(device.device_id, now),
        )
        if not decision.allowed:
            await self._refuse(caller, device, decision)
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
        )
        detail: dict[str, object] = {
            "device": device.device_id,
            "circuit_digest": circuit.digest,
            "shots": job.shots,
            "project": project,
        }
        if session is not None:
            detail["session"] = session.session_id
        return _Prepared(
            job=job,
            event=self.ledger.event("job.submitted", caller, job.job_id, detail),
            quota=self.access.quota_check(principal, project, now),
            session_id=job.session_id,
        )

    def _device(self, device_id: str, caller: str, now: float) -> DeviceRecord:
        """The device if it exists and the caller may see it; the same NOT_FOUND otherwise."""
        device = self.registry.get(device_id)
        if (
            device is None
            or device.status is DeviceStatus.REVOKED
            or not self.gate.visible(caller, device, now)
        ):
            self.anomalies.refusal(caller)
            raise not_found("device", device_id)
        return device

    def _attestation(self, device_id: str, now: float) -> str:
        return "affirming" if self.dispatcher.fleet.attested(device_id, now) else "none"

    async def _refuse(self, caller: str, device: DeviceRecord, decision: Decision) -> NoReturn:
        self.ledger.metrics.denials.labels(decision.rule_id, "submit").inc()
        self.anomalies.refusal(caller)
        detail = {
            "stage": "submit",
            "rule": decision.rule_id,
            "device": device.device_id,
            "reason": decision.reason,
        }
        await self.ledger.audit(self.ledger.event("clearance.denied", caller, "", detail))
        raise BrokerError(
            ErrorCode.PERMISSION_DENIED,
            f"denied by rule {decision.rule_id}: {decision.reason}",
            rule_id=decision.rule_id,
        )

    async def _over_quota(self, caller: str, exc: QuotaExceeded) -> NoReturn:
        limit = "active_jobs" if exc.what == "active jobs" else "shots_per_day"
        self.ledger.metrics.quota_rejections.labels(exc.scope, limit).inc()
        detail = {"scope": exc.scope, "name": exc.name, "limit": limit, "max": exc.limit}
        await self.ledger.audit(self.ledger.event("quota.exceeded", caller, "", detail))
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

    async def quota(self, caller: str, project: str) -> list[QuotaStatus]:
        """The caller's own and their project's quotas with current usage."""
        principal = self.principal(caller)
        chosen = _project_of(principal, project)
        if chosen not in principal.projects:
            raise not_found("project", chosen)
        return await self.access.quota_status(principal, chosen, self.ledger.clock.now())

    async def _validate(self, request: SubmitRequest, device: DeviceRecord) -> Circuit:
        """Parse off the event loop, in the isolated decoder: hostile payloads can't stall us."""
        try:
            circuit = await asyncio.to_thread(
                validate_circuit,
                request.circuit_format,
                request.payload,
                request.shots,
                self.limits,
                decoder=self.decoder,
            )
        except CircuitRejected as exc:
            self.ledger.metrics.rejections.labels(exc.field).inc()
            raise BrokerError(ErrorCode.INVALID_ARGUMENT, str(exc)) from exc
        capacity = self.registry.num_qubits(device.device_id) or 0
        if circuit.num_qubits > capacity:
            self.ledger.metrics.rejections.labels("circuit").inc()
            raise BrokerError(
                ErrorCode.INVALID_ARGUMENT,
                f"circuit uses {circuit.num_qubits} qubits but device {device.device_id!r} has "
                f"{capacity}; choose a larger device or a smaller circuit",
            )
        return circuit

    async def _view(self, job: Job) -> JobView:
        if job.state is not JobState.QUEUED:
            return JobView(job=job, queue_position=0)
        return self._queued_view(job)

    def _queued_view(self, job: Job) -> JobView:
        """Position and ETA from the scheduler's order: the order the dispatcher follows."""
        position = self.scheduler.position(job) or 0
        now = self.ledger.clock.now()
        eta = None
        if position:
            estimate = self.scheduler.seconds_per_job(job.device_id)
            fleet = self.dispatcher.fleet
            conns = fleet.for_device(job.device_id)
            running = [
                max(0.0, estimate - (now - c.leased.dispatched_at))
                for c in conns
                if c.leased is not None and c.leased.dispatched_at is not None
            ]
            busy = min(running) if running and len(running) >= len(conns) else 0.0
            eta = now + eta_seconds(position, estimate, busy, len(conns))
        return JobView(
            job=job,
            queue_position=position,
            waiting_for=self._waiting_for(job),
            eta=eta,
            device_queue_depth=self.scheduler.depth(job.device_id),
        )

    def _select(
        self, caller: str, selector: DeviceSelector, project: str, now: float
    ) -> DeviceRecord:
        """The eligible device with the shortest expected wait; NOT_FOUND (naming what was
        asked, never what exists) when none the caller may use satisfies the selector."""
        candidates = []
        for device in self.registry.all():
            if device.status is not DeviceStatus.ACTIVE or not self.gate.visible(
                caller, device, now
            ):
                continue
            profile = self.dispatcher.fleet.profile(device.device_id, now)
            if profile is None:
                continue  # no attested driver now
            error = self.registry.attested_two_qubit_error(device.device_id)
            if (
                (selector.min_qubits and profile.num_qubits < selector.min_qubits)
                or not selector.basis_gates <= set(profile.basis_gates)
                or (selector.tier and device.tier != selector.tier)
                or (
                    selector.max_two_qubit_error
                    and (error is None or error > selector.max_two_qubit_error)
                )
                or not self.access.availability(device.device_id, now).runs_jobs
            ):
                continue
            decision = self.gate.check(
                Action.SUBMIT_JOB,
                caller,
                device,
                now=now,
                job=JobAttributes(project=project),
                attestation="affirming",
            )
            if decision.allowed:
                wait = self.scheduler.depth(device.device_id) * self.scheduler.seconds_per_job(
                    device.device_id
                )
                candidates.append((wait, device.device_id, device))
        if not candidates:
            raise BrokerError(
                ErrorCode.NOT_FOUND,
                "no attested device you may use matches the selector now "
                f"(min_qubits={selector.min_qubits}, basis_gates={sorted(selector.basis_gates)}, "
                f"tier={selector.tier or 'any'}, max_two_qubit_error="
                f"{selector.max_two_qubit_error or 'any'}); relax it or try later",
            )
        return min(candidates, key=lambda c: (c[0], c[1]))[2]

    def _waiting_for(self, job: Job) -> str:
        """Why a queued job is not moving, in words its owner can act on (or wait out)."""
        device = self.registry.get(job.device_id)
        if device is not None and device.status is DeviceStatus.REVOKED:
            return (
                f"device {job.device_id} was revoked ({device.status_reason}); it will not run "
                "again: cancel this job and submit it to another device"
            )
        if device is not None and device.status is not DeviceStatus.ACTIVE:
            return (
                f"device {job.device_id} is {device.status.value.lower()} "
                f"({device.status_reason}); the job stays queued until an operator releases it"
            )
        now = self.ledger.clock.now()
        available = self.access.availability(job.device_id, now)
        if not available.runs_jobs or (
            available.projects is not None and job.project not in available.projects
        ):
            return available.why
        session = self.sessions.active(job.device_id)
        if session is not None and session.session_id != job.session_id:
            return (
                f"device {job.device_id} is held by a session until at most "
                f"{format_time(session.closes_at)}; the job runs when it closes"
            )
        if not self.dispatcher.fleet.attested(job.device_id, now):
            return f"device {job.device_id} has no freshly attested driver connected"
        return ""

    async def _owned(self, caller: str, job_id: str) -> Job:
        """The job if the caller may see it; NOT_FOUND otherwise, never PERMISSION_DENIED."""
        principal = self.principal(caller)
        job = await self.ledger.runner.call(self.store.get_job, job_id)
        if job is None or (job.owner != caller and Role.OPERATOR not in principal.roles):
            raise not_found("job", job_id)
        return job

    async def get(self, caller: str, job_id: str) -> JobView:
        return await self._view(await self._owned(caller, job_id))

    async def cancel(self, caller: str, job_id: str, reason: str) -> JobView:
        for _ in range(5):  # retry the compare-and-set if the dispatcher moved the job meanwhile
            job = await self._owned(caller, job_id)
            if job.state.terminal:
                raise BrokerError(
                    ErrorCode.FAILED_PRECONDITION,
                    f"job {job_id} is already {job.state.value} and cannot be cancelled",
                )
            why = reason or f"cancelled by {caller}"
            cancelled = job.transition(JobState.CANCELLED, now=self.ledger.clock.now(), reason=why)
            event = self.ledger.event("job.cancelled", caller, job_id, {"from": job.state.value})
            if await self.ledger.save(cancelled, expected_version=job.version, event=event):
                if job.lease is not None:
                    await self.dispatcher.cancel_lease(job.lease.lease_id)
                return await self._view(cancelled)
        raise BrokerError(ErrorCode.UNAVAILABLE, f"job {job_id} kept changing; try cancel again")

    async def list(
        self,
        caller: str,
        *,
        device_id: str | None,
        states: Sequence[JobState],
        limit: int,
        before_seq: int | None,
    ) -> list[tuple[int, JobView]]:
        principal = self.principal(caller)
        owner = None if Role.OPERATOR in principal.roles else caller
        rows = await self.ledger.runner.call(
            self.store.list_jobs,
            owner=owner,
            device_id=device_id,
            states=states,
            limit=limit,
            before_seq=before_seq,
        )
        return [(seq, await self._view(job)) for seq, job in rows]

    async def result(self, caller: str, job_id: str) -> ResultView:
        job = await self._owned(caller, job_id)
        if job.state is not JobState.COMPLETED:
            raise BrokerError(
                ErrorCode.FAILED_PRECONDITION,
                f"job {job_id} is {job.state.value}; a result exists only once it is COMPLETED",
            )
        result = await self.ledger.runner.call(self.store.get_result, job_id)
        if result is None:
            raise BrokerError(ErrorCode.UNAVAILABLE, f"result of job {job_id} is not readable now")
        device = self.registry.get(result.device_id)
        cert = device.certificate_chain_pem if device is not None else b""
        return ResultView(
            result=result, device_certificate=cert, evidence=await self._evidence(result)
        )

    async def _evidence(self, result: JobResult) -> bytes:
        """The evidence the receipt names, from the device's attestation history."""
        try:
            claims = decode_receipt(Envelope.from_json(result.receipt))
        except ValueError:
            return b""
        history = await self.registry.history(result.device_id, 1000)
        return next(
            (r.evidence for r in history if r.evidence_digest == claims.evidence_digest), b""
        )

    # --- sessions -----------------------------------------------------------------------

    def _is_operator(self, caller: str) -> bool:
        return Role.OPERATOR in self.principal(caller).roles

    async def open_session(
        self, caller: str, device_id: str, project: str, max_seconds: float
    ) -> Session:
        principal = self.principal(caller)
        now = self.ledger.clock.now()
        device = self._device(device_id, caller, now)
        chosen = _project_of(principal, project)
        decision = self.gate.check(
            Action.SUBMIT_JOB,
            caller,
            device,
            now=now,
            job=JobAttributes(project=chosen),
            attestation=self._attestation(device.device_id, now),
        )
        if not decision.allowed:
            await self._refuse(caller, device, decision)
        return await self.sessions.open(caller, device.device_id, chosen, max_seconds)

    async def get_session(self, caller: str, session_id: str) -> Session:
        return await self.sessions.get(caller, session_id, operator=self._is_operator(caller))

    async def close_session(self, caller: str, session_id: str, reason: str) -> Session:
        return await self.sessions.close(
            caller, session_id, reason, operator=self._is_operator(caller)
        )

    async def list_sessions(self, caller: str, device_id: str, closed: bool) -> Sequence[Session]:
        return await self.sessions.sessions(
            caller, operator=self._is_operator(caller), device_id=device_id, closed=closed
        )

    async def watch(self, caller: str, job_id: str) -> AsyncIterator[JobView]:
        """The current view, then each change (state or queue position) until terminal."""
        job = await self._owned(caller, job_id)
        with self.ledger.watchers.subscribe(job_id, job.device_id) as sub:
            view = await self.get(caller, job_id)
            yield view
            while not view.job.state.terminal:
                item = await sub.queue.get()
                fresh = (
                    await self._view(item) if item is not None else await self.get(caller, job_id)
                )
                if (fresh.job.version, fresh.queue_position) != (
                    view.job.version,
                    view.queue_position,
                ) and fresh.job.version >= view.job.version:
                    view = fresh
                    yield view


def _check_same_request(stored: Job, attempted: Job) -> None:
    """An idempotency key names one request; reusing it for another is a client bug."""
    if (stored.device_id, stored.circuit.digest, stored.shots) != (
        attempted.device_id,
        attempted.circuit.digest,
        attempted.shots,
    ):
        raise BrokerError(
            ErrorCode.FAILED_PRECONDITION,
            f"idempotency key {attempted.idempotency_key!r} was already used for job "
            f"{stored.job_id} with a different device, circuit or shot count; use a new key",
        )


def _project_of(principal: Principal, requested: str) -> str:
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
