"""The lease lifecycle after a job leaves: started, result (receipt checked before anything is
stored), failure, a driver lost, a lease expired. Every job write is a compare-and-set, so a
late message from an old driver, a cancel or another replica can never make a job complete
twice; a lease that ends without a result gives the job back, up to the retry limit.

A driver may hold several leases at once (its pipeline); each lives and ends on its own. A
lease's clock runs from its grant and starts again when its job starts, so a lease waiting in
the driver's queue expires if the jobs ahead of it take too long. A lease the broker withdraws
(expired, or taken back before its job started by `broker.link.pipeline`) is sent a
LeaseCancel; the driver's "cancelled" answer is expected, and a start or result for it is
refused (counted as `lease_withdrawn`), so its job's result is never accepted.

A message about a lease the connection does not hold, a second answer for one it already
answered, or one naming its own lease with another job's id, changes nothing: it is counted
and audited in aggregate by the link door (never one log line each), and the lease stands."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping

from broker.anomaly.canary import CanaryRunner
from broker.audit.log import AuditLog
from broker.audit.model import AuditEvent
from broker.clock import Clock
from broker.devices.registry import DeviceRegistry
from broker.jobs.ledger import JobLedger
from broker.jobs.model import Job, JobResult, JobState
from broker.jobs.result_digests import completed_detail
from broker.jobs.wakeups import DispatchWakeups
from broker.link import messages as m
from broker.link.attestor import Attestor
from broker.link.door import LinkDoor, LinkRefusal
from broker.link.fleet import DriverConnection, Fleet
from broker.link.port import LinkPort
from broker.link.receipts import contraindicated, receipt_problems
from broker.link.replicas import ReplicaRoster
from broker.metrics import BrokerMetrics
from broker.settings import TimingSettings
from broker.store import StoreError
from broker.store.runner import StoreRunner

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class _Completion:
    """A verified result and the compare-and-set that stores it."""

    done: Job
    version: int  # the job's stored version the result answers
    event: AuditEvent
    result: JobResult


class LeaseKeeper:
    def __init__(
        self,
        *,
        link: LinkPort,
        fleet: Fleet,
        registry: DeviceRegistry,
        attestor: Attestor,
        ledger: JobLedger,
        runner: StoreRunner,
        clock: Clock,
        audit: AuditLog,
        metrics: BrokerMetrics,
        timing: TimingSettings,
        canary: CanaryRunner,
        wakeups: DispatchWakeups,
        door: LinkDoor,
        replicas: ReplicaRoster,
    ) -> None:
        self._door = door
        self._replicas = replicas
        self._link = link
        self._fleet = fleet
        self._registry = registry
        self._attestor = attestor
        self._ledger = ledger
        self._runner = runner
        self._clock = clock
        self._audit = audit
        self._metrics = metrics
        self._timing = timing
        self._canary = canary
        self._wakeups = wakeups
        # Verified results that arrived while the store was away, by job id.
        self._unsaved: dict[str, _Completion] = {}

    async def save(self, before: Job, after: Job, kind: str, detail: Mapping[str, object]) -> bool:
        """Compare-and-set `after` over `before` with a broker audit event."""
        event = self._audit.event(kind, "broker", before.job_id, detail)
        return await self._ledger.save(after, expected_version=before.version, event=event)

    def new_lease_id(self) -> str:
        return self._replicas.new_lease_id()

    async def release(
        self, job: Job, cause: str, metric_cause: str, *, charge: bool = True
    ) -> None:
        """Give a leased job back to the queue, or fail it once its attempts are used up.
        Without `charge` the attempt is given back too: the job did nothing wrong (the broker
        replica that leased it died)."""
        now = self._clock.now()
        if not charge:
            after = dataclasses.replace(
                job.transition(JobState.QUEUED, now=now, reason=f"requeued: {cause}"),
                attempts=max(0, job.attempts - 1),
            )
            detail = {"cause": cause, "attempts": after.attempts, "charged": False}
            if await self.save(job, after, "job.requeued", detail):
                self._metrics.lease_expiries.labels(job.device_id, metric_cause).inc()
            self._wakeups.kick(job.device_id)
            return
        if job.attempts >= self._timing.max_attempts:
            after = job.transition(
                JobState.FAILED,
                now=now,
                reason=f"gave up after {job.attempts} attempts; last: {cause}",
            )
            kind = "job.failed"
        else:
            after = job.transition(JobState.QUEUED, now=now, reason=f"requeued: {cause}")
            kind = "job.requeued"
        if await self.save(job, after, kind, {"cause": cause, "attempts": job.attempts}):
            self._metrics.lease_expiries.labels(job.device_id, metric_cause).inc()
        self._wakeups.kick(job.device_id)

    def _leased_job(self, conn: DriverConnection, lease_id: str, job_id: str) -> Job | None:
        """The job only if this connection holds this lease and names the job it was given;
        anything else is refused (counted) and changes nothing."""
        job = conn.leases.get(lease_id)
        if job is None:
            if lease_id in conn.withdrawn:
                reason = LinkRefusal.LEASE_WITHDRAWN
            elif lease_id in conn.answered:
                reason = LinkRefusal.DUPLICATE_RESULT
            else:
                reason = LinkRefusal.LEASE_NOT_HELD
            self._door.refused(reason, conn.device_id)
            return None
        if job.job_id != job_id:
            self._door.refused(LinkRefusal.WRONG_JOB, conn.device_id)
            return None
        return job

    def _is_canary(self, conn: DriverConnection, lease_id: str) -> bool:
        return conn.canary_lease == lease_id and lease_id in conn.leases

    def _end_canary(self, conn: DriverConnection) -> None:
        if conn.canary_lease is not None:
            conn.answer(conn.canary_lease)
        conn.canary_lease = None
        self._wakeups.kick(conn.device_id)

    async def withdraw(self, conn: DriverConnection, lease_id: str) -> None:
        """Take a lease back from the driver (expired, or its grant no longer stands): nothing
        it sends about it is accepted from now on, and it is told to drop it."""
        conn.withdraw(lease_id)
        await self._link.send(conn.peer, m.LeaseCancel(lease_id=lease_id))

    async def on_started(self, conn: DriverConnection, msg: m.LeaseStarted) -> None:
        if self._is_canary(conn, msg.lease_id):
            return
        job = self._leased_job(conn, msg.lease_id, msg.job_id)
        if job is None or job.state is not JobState.DISPATCHED or job.lease is None:
            return
        now = self._clock.now()
        # The lease's clock starts again with its job: the wait in the driver's queue is over.
        lease = dataclasses.replace(job.lease, expires_at=now + self._timing.lease_seconds)
        running = dataclasses.replace(job.transition(JobState.RUNNING, now=now), lease=lease)
        saved = await self.save(job, running, "job.running", {"device": conn.device_id})
        if saved and msg.lease_id in conn.leases:  # not withdrawn while the write was awaited
            conn.leases[msg.lease_id] = running

    async def on_failure(self, conn: DriverConnection, msg: m.LeaseFailure) -> None:
        if self._is_canary(conn, msg.lease_id):
            self._end_canary(conn)
            self._canary.failed(conn.device_id)
            return
        if msg.lease_id in conn.withdrawn and msg.lease_id not in conn.leases:
            return  # the driver dropping a lease the broker withdrew, as it was told to
        job = self._leased_job(conn, msg.lease_id, msg.job_id)
        if job is None:  # not this connection's lease (a late failure for an old one)
            return
        conn.answer(msg.lease_id)
        if msg.permanent:
            failed = job.transition(
                JobState.FAILED, now=self._clock.now(), reason=f"device error: {msg.error}"
            )
            await self.save(job, failed, "job.failed", {"reason": msg.error})
            self._wakeups.kick(conn.device_id)
        else:
            await self.release(job, f"device error: {msg.error}", "driver_error")

    async def on_result(self, conn: DriverConnection, msg: m.LeaseResult) -> None:
        if self._is_canary(conn, msg.lease_id):
            await self._canary_result(conn, msg)
            return
        job = self._leased_job(conn, msg.lease_id, msg.job_id)
        if job is None:
            return
        conn.answer(msg.lease_id)
        problems = receipt_problems(self._registry, conn, job, msg)
        if problems:
            self._metrics.receipts.labels(conn.device_id, "rejected").inc()
            await self._reject_receipt(conn, job, problems)
            await self.release(job, "result receipt failed verification", "bad_receipt")
            return
        self._metrics.receipts.labels(conn.device_id, "verified").inc()
        # The connection has room again: the next lease's write can join this result's.
        self._wakeups.kick(conn.device_id)
        await self._complete(conn, job, msg)

    async def _complete(self, conn: DriverConnection, job: Job, msg: m.LeaseResult) -> None:
        now = self._clock.now()
        result = JobResult(
            job_id=job.job_id,
            device_id=conn.device_id,
            counts=dict(msg.counts),
            execution_seconds=msg.execution_seconds,
            receipt=msg.receipt,
            stored_at=now,
            executed_circuit=msg.executed_circuit,
            memory=msg.memory,
            memory_width=msg.memory_width,
        )
        done = job.transition(JobState.COMPLETED, now=now)
        event = self._audit.event(
            "job.completed", "broker", job.job_id, completed_detail(result, job.shots)
        )
        completion = _Completion(done, job.version, event, result)
        try:
            await self._save_completion(completion)
        except StoreError:
            # The store is away: keep the verified result and write it once the store is back
            # (each tick tries); until then the reaper leaves the job's lease alone, so the job
            # is neither lost nor run a second time.
            self._unsaved[job.job_id] = completion
            log.info("result for job %s kept until the store answers again", job.job_id)

    async def _save_completion(self, c: _Completion) -> None:
        saved = await self._ledger.save(
            c.done, expected_version=c.version, event=c.event, result=c.result
        )
        if saved:
            self._metrics.execution.labels(c.result.device_id).observe(c.result.execution_seconds)
        else:
            log.info("result for job %s discarded: it was cancelled or requeued", c.done.job_id)

    async def _save_unsaved(self) -> None:
        """Write the results that arrived while the store was away (StoreError while it
        still is)."""
        for job_id, completion in list(self._unsaved.items()):
            await self._save_completion(completion)
            del self._unsaved[job_id]
            self._wakeups.kick(completion.done.device_id)

    async def _canary_result(self, conn: DriverConnection, msg: m.LeaseResult) -> None:
        job = conn.leases.get(msg.lease_id)
        self._end_canary(conn)
        if job is None:
            return
        problems = receipt_problems(self._registry, conn, job, msg)
        if problems:
            await self._reject_receipt(conn, job, problems)
        self._canary.finished(job, msg.counts, problems)

    async def _reject_receipt(self, conn: DriverConnection, job: Job, problems: list[str]) -> None:
        """A device that signs a bad receipt gets no more work until it attests again."""
        await self._audit.record("receipt.rejected", "broker", job.job_id, {"problems": problems})
        result = contraindicated(conn, "; ".join(problems), self._clock.now())
        self._attestor.reject(conn, result)

    async def disconnect(self, conn: DriverConnection, cause: str) -> None:
        """Forget a driver; every lease it held, started or not, goes back to the queue."""
        if self._fleet.remove(conn.peer) is None:
            return
        self._metrics.drivers.labels(conn.device_id).dec()
        log.warning("driver for %s lost: %s", conn.device_id, cause)
        held = conn.job_leases()
        conn.leases.clear()
        for leased in held:
            assert leased.lease is not None
            job = await self._ledger.get(leased.job_id)
            lease_id = job.lease.lease_id if job is not None and job.lease is not None else None
            if job is not None and lease_id == leased.lease.lease_id:
                await self.release(job, f"driver lost ({cause})", "driver_lost")

    async def reap(self, now: float) -> None:
        """Requeue leases that expired, or whose driver is gone (e.g. after a broker restart)."""
        grace = self._timing.heartbeat_seconds * self._timing.heartbeat_misses
        for conn in self._fleet:
            canary = conn.leases.get(conn.canary_lease) if conn.canary_lease else None
            if canary is not None and canary.lease is not None and canary.lease.expires_at <= now:
                self._end_canary(conn)
                self._canary.failed(conn.device_id)
        await self._save_unsaved()
        alive: dict[str, bool] = {}
        for job in await self._runner.call(self._runner.store.leased_jobs):
            assert job.lease is not None
            if job.job_id in self._unsaved:
                continue  # its result is waiting to be written, not lost
            issuer = self._replicas.issuer(job.lease.lease_id)
            if issuer is not None and issuer != self._replicas.replica_id:
                if issuer not in alive:
                    alive[issuer] = await self._replicas.alive(issuer)
                if not alive[issuer]:
                    cause = "the broker replica that leased it stopped"
                    await self.release(job, cause, "replica_lost", charge=False)
                continue  # a live replica answers for its own leases
            held = self._fleet.holding(job.lease.lease_id)
            if job.lease.expires_at <= now:
                if held is not None:
                    await self.withdraw(held, job.lease.lease_id)
                await self.release(job, "lease expired before the device answered", "expired")
            elif held is None and now - job.updated_at > grace:
                await self.release(job, "no connected driver holds the lease", "orphaned")

    async def cancel_lease(self, lease_id: str) -> None:
        """Tell the driver holding this lease to drop it (its job was cancelled)."""
        conn = self._fleet.holding(lease_id)
        if conn is not None:
            await self._link.send(conn.peer, m.LeaseCancel(lease_id=lease_id))
