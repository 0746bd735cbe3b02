"""The dispatch gate and the lease lifecycle: queued job -> lease -> verified result.

One task fills devices, so within a broker no two fills race; across broker replicas the
store's compare-and-set on the job version decides who wins. A job leaves only when, at that
moment, the chosen driver's attestation affirms and is unexpired and the owner's clearance
still allows the device.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import uuid
from collections.abc import Mapping

from attestation.appraisal import AttestationResult, AttestationStatus, Reason, ReasonCode
from attestation.dsse import Envelope, EnvelopeError
from attestation.receipts import ReceiptError, decode_receipt, verify_receipt
from broker.access.clearance import ClearanceGate, Decision
from broker.access.registry import AccessRegistry
from broker.anomaly.canary import CanaryRunner
from broker.devices.model import DeviceStatus
from broker.devices.registry import DeviceRegistry
from broker.jobs.ledger import JobLedger
from broker.jobs.model import Job, JobResult, JobState, Lease
from broker.jobs.scheduler import Scheduler
from broker.jobs.sessions import SessionManager
from broker.link.attestor import Attestor
from broker.link.fleet import DriverConnection, Fleet
from broker.link.socket import DriverLink
from broker.policy import Action, JobAttributes
from broker.settings import TimingSettings
from broker.store.base import Store
from qtestbed.shared.wire import format_to_proto
from qtestbed.v1 import driver_link_pb2 as link_pb

log = logging.getLogger(__name__)


class Dispatcher:
    def __init__(
        self,
        *,
        link: DriverLink,
        fleet: Fleet,
        registry: DeviceRegistry,
        gate: ClearanceGate,
        access: AccessRegistry,
        ledger: JobLedger,
        timing: TimingSettings,
        scheduler: Scheduler,
        attestor: Attestor | None = None,
        canary: CanaryRunner | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.sessions: SessionManager | None = None  # set once the session manager exists
        self.canary = canary
        self.registry = registry
        self.gate = gate
        self.access = access
        self.link = link
        self.fleet = fleet
        self.ledger = ledger
        self.timing = timing
        self.attestor = attestor
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()

    @property
    def store(self) -> Store:
        return self.ledger.runner.store

    def kick(self, device_id: str) -> None:
        """Ask the fill loop to look at this device's queue soon."""
        self._dirty.add(device_id)
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._dirty:
                device_id = self._dirty.pop()
                try:
                    await self._fill(device_id)
                except Exception:
                    log.exception(
                        "filling device %s failed; will retry on the next tick", device_id
                    )

    async def _fill(self, device_id: str) -> None:
        while True:
            now = self.ledger.clock.now()
            if device_id in self.registry.devices and not self.registry.accepts_work(device_id):
                return  # quarantined or revoked: its queue is held, jobs say why
            available = self.access.availability(device_id, now)
            if not available.runs_jobs:
                return  # maintenance or retired: the queue waits, jobs say why
            idle = [c for c in self.fleet.for_device(device_id) if c.dispatchable(now)]
            if not idle:
                return
            if self.canary is not None and self.canary.due(device_id, now):
                await self._send_canary(idle[0], now)
                continue
            # In a reservation window only the reserving project's jobs move, and while a
            # session holds the device only its jobs do; the rest wait and say why.
            session = self.sessions.active(device_id) if self.sessions is not None else None
            head = self.scheduler.next_job(
                device_id,
                available.projects,
                session=session.session_id if session is not None else None,
            )
            if head is None:
                return
            if not await self._dispatch_or_deny(head, idle[0], now):
                # Another writer (a replica, a cancel) changed the job: take the store's word.
                fresh = await self.ledger.runner.call(self.store.get_job, head.job_id)
                self.scheduler.forget(head.job_id)
                if fresh is not None:
                    self.scheduler.observe(fresh)

    async def _dispatch_or_deny(self, job: Job, conn: DriverConnection, now: float) -> bool:
        """Dispatch (or deny) `job`; False when its stored version had moved on meanwhile."""
        device = self.registry.get(job.device_id)
        if device is None:
            failed = job.transition(
                JobState.FAILED, now=now, reason=f"device {job.device_id!r} was retired"
            )
            return await self._save(job, failed, "job.failed", {"reason": failed.reason})
        assert conn.attestation is not None  # dispatchable() checked it
        decision = self.gate.check(
            Action.DISPATCH_JOB,
            job.owner,
            device,
            now=now,
            job=JobAttributes(project=job.project, shots=job.shots, qubits=job.circuit.num_qubits),
            attestation=conn.attestation.status.value,
        )
        if not decision.allowed:
            return await self._deny(job, decision, now)
        lease = Lease(
            lease_id=uuid.uuid4().hex,
            device_id=job.device_id,
            expires_at=now + self.timing.lease_seconds,
            dispatch_nonce=secrets.token_bytes(32),
        )
        claims = conn.attestation.claims
        leased = dataclasses.replace(
            job.transition(JobState.DISPATCHED, now=now, lease=lease),
            evidence_digest=conn.attestation.evidence_digest,
            calibration_digest=claims.measurements.calibration_digest if claims else "",
        )
        conn.active_lease, conn.leased = lease.lease_id, leased
        detail: dict[str, object] = {
            "device": job.device_id,
            "lease": lease.lease_id,
            "attempt": leased.attempts,
            "evidence_digest": conn.attestation.evidence_digest,
            "rule": decision.rule_id,
        }
        if not await self._save(job, leased, "job.dispatched", detail):
            conn.active_lease, conn.leased = None, None
            return False
        if not (self.registry.accepts_work(job.device_id) and conn.dispatchable_now(now)):
            # Revoked, quarantined or dropped while the lease was being written: it never leaves.
            conn.active_lease, conn.leased = None, None
            await self.release(leased, "device stopped accepting work before dispatch", "gate")
            return True
        if leased.attempts == 1:
            self.ledger.metrics.queue_wait.labels(job.device_id).observe(now - job.created_at)
        if not await self.link.send(
            conn.identity, _grant(leased, lease, self.timing.lease_seconds)
        ):
            await self.disconnect(conn, "driver unreachable when the lease was sent")
        return True

    async def _send_canary(self, conn: DriverConnection, now: float) -> None:
        assert self.canary is not None
        job = self.canary.lease(
            conn.device_id, conn.profile.num_qubits, now, self.timing.lease_seconds
        )
        assert job.lease is not None
        conn.active_lease, conn.leased, conn.canary_lease = (
            job.lease.lease_id,
            job,
            job.lease.lease_id,
        )
        if not await self.link.send(
            conn.identity, _grant(job, job.lease, self.timing.lease_seconds)
        ):
            await self.disconnect(conn, "driver unreachable when a canary was sent")

    def _is_canary(self, conn: DriverConnection, lease_id: str) -> bool:
        return conn.running_canary and conn.active_lease == lease_id

    def _end_canary(self, conn: DriverConnection) -> None:
        conn.active_lease, conn.leased, conn.canary_lease = None, None, None
        self.kick(conn.device_id)

    async def _canary_result(self, conn: DriverConnection, msg: link_pb.LeaseResult) -> None:
        job = conn.leased
        self._end_canary(conn)
        if job is None or self.canary is None:
            return
        counts = dict(msg.counts)
        problems = self._check_receipt(conn, job, msg.receipt, counts)
        if problems:
            await self.ledger.audit(
                self.ledger.event("receipt.rejected", "broker", job.job_id, {"problems": problems})
            )
            self._contraindicate(conn, "; ".join(problems))
        self.canary.finished(job, counts, problems)

    async def _deny(self, job: Job, decision: Decision, now: float) -> bool:
        """The clearance changed since submit: the job never leaves, and says why."""
        denied = job.transition(
            JobState.DENIED, now=now, reason=decision.reason, rule_id=decision.rule_id
        )
        detail = {
            "stage": "dispatch",
            "rule": decision.rule_id,
            "device": job.device_id,
            "reason": decision.reason,
        }
        if not await self._save(job, denied, "clearance.denied", detail):
            return False
        self.ledger.metrics.denials.labels(decision.rule_id, "dispatch").inc()
        return True

    async def _save(self, before: Job, after: Job, kind: str, detail: Mapping[str, object]) -> bool:
        event = self.ledger.event(kind, "broker", before.job_id, detail)
        return await self.ledger.save(after, expected_version=before.version, event=event)

    async def release(self, job: Job, cause: str, metric_cause: str) -> None:
        """Give a leased job back to the queue, or fail it once its attempts are used up."""
        now = self.ledger.clock.now()
        if job.attempts >= self.timing.max_attempts:
            after = job.transition(
                JobState.FAILED,
                now=now,
                reason=f"gave up after {job.attempts} attempts; last: {cause}",
            )
            kind = "job.failed"
        else:
            after = job.transition(JobState.QUEUED, now=now, reason=f"requeued: {cause}")
            kind = "job.requeued"
        if await self._save(job, after, kind, {"cause": cause, "attempts": job.attempts}):
            self.ledger.metrics.lease_expiries.labels(job.device_id, metric_cause).inc()
        self.kick(job.device_id)

    async def _leased_job(self, conn: DriverConnection, lease_id: str, job_id: str) -> Job | None:
        """The job only if this connection holds this lease and the store agrees."""
        if conn.active_lease != lease_id:
            log.info(
                "ignoring a message for lease %s that %s does not hold", lease_id, conn.device_id
            )
            return None
        job = conn.leased
        if job is None or job.job_id != job_id:
            conn.active_lease, conn.leased = None, None
            self.kick(conn.device_id)
            return None
        return job

    async def on_started(self, conn: DriverConnection, msg: link_pb.LeaseStarted) -> None:
        if self._is_canary(conn, msg.lease_id):
            return
        job = await self._leased_job(conn, msg.lease_id, msg.job_id)
        if job is not None and job.state is JobState.DISPATCHED:
            running = job.transition(JobState.RUNNING, now=self.ledger.clock.now(), lease=job.lease)
            if await self._save(job, running, "job.running", {"device": conn.device_id}):
                conn.leased = running

    async def on_failure(self, conn: DriverConnection, msg: link_pb.LeaseFailure) -> None:
        if self._is_canary(conn, msg.lease_id):
            self._end_canary(conn)
            if self.canary is not None:
                self.canary.failed(conn.device_id)
            return
        job = await self._leased_job(conn, msg.lease_id, msg.job_id)
        conn.active_lease, conn.leased = None, None
        if job is None:
            return
        if msg.permanent:
            failed = job.transition(
                JobState.FAILED, now=self.ledger.clock.now(), reason=f"device error: {msg.error}"
            )
            await self._save(job, failed, "job.failed", {"reason": msg.error})
            self.kick(conn.device_id)
        else:
            await self.release(job, f"device error: {msg.error}", "driver_error")

    async def on_result(self, conn: DriverConnection, msg: link_pb.LeaseResult) -> None:
        if self._is_canary(conn, msg.lease_id):
            await self._canary_result(conn, msg)
            return
        job = await self._leased_job(conn, msg.lease_id, msg.job_id)
        if job is None:
            return
        conn.active_lease, conn.leased = None, None
        counts = dict(msg.counts)
        problems = self._check_receipt(conn, job, msg.receipt, counts)
        metrics = self.ledger.metrics
        if problems:
            metrics.receipts.labels(conn.device_id, "rejected").inc()
            await self.ledger.audit(
                self.ledger.event("receipt.rejected", "broker", job.job_id, {"problems": problems})
            )
            self._contraindicate(conn, "; ".join(problems))
            await self.release(job, "result receipt failed verification", "bad_receipt")
            return
        metrics.receipts.labels(conn.device_id, "verified").inc()
        now = self.ledger.clock.now()
        result = JobResult(
            job_id=job.job_id,
            device_id=conn.device_id,
            counts=counts,
            execution_seconds=msg.execution_seconds,
            receipt=msg.receipt,
            stored_at=now,
        )
        done = job.transition(JobState.COMPLETED, now=now)
        event = self.ledger.event(
            "job.completed", "broker", job.job_id, {"device": conn.device_id, "shots": job.shots}
        )
        if await self.ledger.save(done, expected_version=job.version, event=event, result=result):
            metrics.execution.labels(conn.device_id).observe(msg.execution_seconds)
        else:
            log.info("result for job %s discarded: it was cancelled or requeued", job.job_id)
        self.kick(conn.device_id)

    def _check_receipt(
        self, conn: DriverConnection, job: Job, receipt: bytes, counts: dict[str, int]
    ) -> list[str]:
        device = self.registry.get(conn.device_id)
        if (
            device is None
            or device.status is DeviceStatus.REVOKED
            or job.lease is None
            or conn.attestation is None
            or conn.device_key is None
        ):
            return ["device is no longer registered, attested or trusted"]
        problems = verify_receipt(
            receipt,
            conn.device_key,
            job_id=job.job_id,
            circuit_digest=job.circuit.digest,
            shots=job.shots,
            counts=counts,
            dispatch_nonce=job.lease.dispatch_nonce,
        )
        try:
            claims = decode_receipt(Envelope.from_json(receipt))
        except (EnvelopeError, ReceiptError) as exc:
            return [*problems, f"receipt unreadable: {exc}"]
        if claims.evidence_digest != conn.attestation.evidence_digest:
            problems.append("receipt names evidence other than what the device last attested with")
        if sum(counts.values()) != job.shots:
            problems.append(f"counts add up to {sum(counts.values())}, expected {job.shots} shots")
        return problems

    def _contraindicate(self, conn: DriverConnection, detail: str) -> None:
        """A device that signs a bad receipt gets no more work until it attests again."""
        now = self.ledger.clock.now()
        result = AttestationResult(
            device_id=conn.device_id,
            status=AttestationStatus.CONTRAINDICATED,
            reasons=(Reason(code=ReasonCode.SIGNATURE_INVALID, detail=f"bad receipt: {detail}"),),
            claims=None,
            evidence_digest=conn.attestation.evidence_digest if conn.attestation else "",
            issued_at=now,
            expires_at=now,
        )
        if self.attestor is not None:
            self.attestor.reject(conn, result)

    async def disconnect(self, conn: DriverConnection, cause: str) -> None:
        """Forget a driver; its lease, if any, goes back to the queue at once."""
        if self.fleet.remove(conn.identity) is None:
            return
        self.ledger.metrics.drivers.labels(conn.device_id).dec()
        log.warning("driver for %s lost: %s", conn.device_id, cause)
        if conn.active_lease and conn.leased is not None and not conn.running_canary:
            job = await self.ledger.runner.call(self.store.get_job, conn.leased.job_id)
            if (
                job is not None
                and job.lease is not None
                and job.lease.lease_id == conn.active_lease
            ):
                await self.release(job, f"driver lost ({cause})", "driver_lost")

    async def reap(self, now: float) -> None:
        """Requeue leases that expired, or whose driver is gone (e.g. after a broker restart)."""
        grace = self.timing.heartbeat_seconds * self.timing.heartbeat_misses
        for conn in self.fleet:
            canary = conn.leased if conn.running_canary else None
            if canary is not None and canary.lease is not None and canary.lease.expires_at <= now:
                self._end_canary(conn)
                if self.canary is not None:
                    self.canary.failed(conn.device_id)
        for job in await self.ledger.runner.call(self.store.leased_jobs):
            assert job.lease is not None
            held = self.fleet.holding(job.lease.lease_id)
            if job.lease.expires_at <= now:
                if held is not None:
                    held.active_lease, held.leased = None, None
                await self.release(job, "lease expired before the device answered", "expired")
            elif held is None and now - job.updated_at > grace:
                await self.release(job, "no connected driver holds the lease", "orphaned")

    async def cancel_lease(self, lease_id: str) -> None:
        """Tell the driver holding this lease to drop it (its job was cancelled)."""
        conn = self.fleet.holding(lease_id)
        if conn is not None:
            await self.link.send(
                conn.identity, link_pb.LinkMessage(cancel=link_pb.LeaseCancel(lease_id=lease_id))
            )


def _grant(job: Job, lease: Lease, lease_seconds: float) -> link_pb.LinkMessage:
    grant = link_pb.LeaseGrant(
        lease_id=lease.lease_id,
        job_id=job.job_id,
        circuit_format=format_to_proto(job.circuit.format),
        circuit_payload=job.circuit.payload,
        circuit_digest=job.circuit.digest,
        shots=job.shots,
        dispatch_nonce=lease.dispatch_nonce,
        lease_seconds=lease_seconds,
    )
    return link_pb.LinkMessage(lease=grant)
