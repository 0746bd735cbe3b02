"""The dispatch gate: queued job -> lease, only while the chosen connection's attestation
affirms and the owner's clearance still allows the device with that connection's export class
(each connection is classified from its own evidence; a job skips connections whose class its
owner may not use, and waits while only a busy connection's class allows it).

One task fills devices, so within a broker no two fills race; across broker replicas the
store's compare-and-set on the job version decides who wins. Both checks run on the state in
force when the job leaves: once before the lease write, and all of them again after it, on the
access records as committed then (reloaded when another writer changed them), so a revocation,
quarantine or clearance change committed meanwhile keeps the job home.

A connection takes leases up to its capacity (its pipeline; see `broker.link.pipeline`), and
before a device is given more, the leases it holds but has not started are decided again. One
pass picks every lease the device's connections have room for (each job claimed on the
scheduler, so the next pick passes over it), writes them together and sends them in order.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets

from broker.access.clearance import Decision
from broker.access.records import AccessRecords
from broker.anomaly.canary import CanaryRunner
from broker.clock import Clock
from broker.devices.operations import DeviceSchedule
from broker.devices.registry import DeviceRegistry
from broker.jobs.ledger import JobLedger
from broker.jobs.model import Job, JobState, Lease
from broker.jobs.scheduler import Scheduler
from broker.jobs.sessions import SessionManager
from broker.jobs.wakeups import DispatchWakeups
from broker.link import messages as m
from broker.link.fleet import DriverConnection, Fleet
from broker.link.leases import LeaseKeeper
from broker.link.pipeline import DispatchDecisions, PendingLeases
from broker.link.port import LinkPort
from broker.link.rights import DispatchRights
from broker.metrics import BrokerMetrics
from broker.settings import TimingSettings
from broker.store import StoreError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class _Grant:
    """A lease picked for a connection in one pass of `fill`, before and after its write."""

    job: Job  # as it was queued
    leased: Job  # as it is written
    conn: DriverConnection
    rule_id: str  # the rule that allowed it
    at: float  # when it was picked

    @property
    def lease_id(self) -> str:
        assert self.leased.lease is not None
        return self.leased.lease.lease_id

    def detail(self) -> dict[str, object]:
        """The audit detail of its dispatch."""
        assert self.conn.attestation is not None
        return {
            "device": self.leased.device_id,
            "lease": self.lease_id,
            "attempt": self.leased.attempts,
            "evidence_digest": self.conn.attestation.evidence_digest,
            "rule": self.rule_id,
        }


class Dispatcher:
    def __init__(
        self,
        *,
        link: LinkPort,
        fleet: Fleet,
        registry: DeviceRegistry,
        records: AccessRecords,
        schedule: DeviceSchedule,
        scheduler: Scheduler,
        sessions: SessionManager,
        ledger: JobLedger,
        leases: LeaseKeeper,
        canary: CanaryRunner,
        clock: Clock,
        metrics: BrokerMetrics,
        timing: TimingSettings,
        wakeups: DispatchWakeups,
        decisions: DispatchDecisions,
        pending: PendingLeases,
        rights: DispatchRights,
    ) -> None:
        self._link = link
        self._fleet = fleet
        self._registry = registry
        self._records = records
        self._schedule = schedule
        self._scheduler = scheduler
        self._sessions = sessions
        self._ledger = ledger
        self._leases = leases
        self._canary = canary
        self._clock = clock
        self._metrics = metrics
        self._timing = timing
        self._wakeups = wakeups
        self._decisions = decisions
        self._pending = pending
        self._rights = rights

    async def run(self) -> None:
        while True:
            await self._wakeups.wait()
            while (device_id := self._wakeups.take()) is not None:
                try:
                    await self.fill(device_id)
                except StoreError:
                    pass  # the store's health logs an outage once; the next tick kicks again
                except Exception:
                    log.exception(
                        "filling device %s failed; will retry on the next tick", device_id
                    )

    async def fill(self, device_id: str) -> None:
        """Lease the device's next jobs to its attested connections with room, once the
        leases they hold unstarted have been decided again. Every lease there is room for is
        picked in one pass and the lot written together (the store can commit them in one
        transaction), then sent in queue order."""
        await self._pending.recheck(device_id)
        if not await self._holds_right(device_id):
            return
        while True:
            now = self._clock.now()
            picked, step = await self._pick(device_id, now)
            if picked:
                await self._lease_all(picked)
            elif isinstance(step, DriverConnection):
                await self._send_canary(step, now)
            elif step is not None and not await self._dispatch_or_deny(*step, now):
                await self._resync(step[0])
            elif step is None:
                return

    async def _holds_right(self, device_id: str) -> bool:
        """Only the process holding the device's dispatch right leases its jobs (see
        `broker.link.rights`); it takes the right once it has an attested driver of it."""
        if not self._fleet.attested(device_id, self._clock.now()):
            return False  # no driver here to lease to
        return await self._rights.claim(device_id)

    async def _pick(
        self, device_id: str, now: float
    ) -> tuple[list[_Grant], DriverConnection | tuple[Job, DriverConnection] | None]:
        """The leases the device's connections have room for, in queue order, each reserved
        (held by its connection, claimed on the queue book) but not yet written; and what stopped
        the pass: a connection due a canary, a job to deny or fail in line, or None (no room,
        no job, or the head waits for a busy connection)."""
        picked: list[_Grant] = []
        while idle := self._idle(device_id, now):
            if self._canary.due(device_id, now):
                return picked, idle[0]
            head = await self._next(device_id, now)
            if head is None:
                break
            conn = self._connection_for(head, idle, now)
            if conn is None:
                break  # only a busy connection's class allows the job: it waits for that one
            device = self._registry.get(head.device_id)
            decision = self._decisions.decide(head, device, conn, now) if device else None
            if decision is None or not decision.allowed:
                return picked, (head, conn)
            picked.append(self._reserve(head, conn, decision, now))
        return picked, None

    async def _resync(self, job: Job) -> None:
        """Another writer (a replica, a cancel) changed the job: take the store's word."""
        fresh = await self._ledger.get(job.job_id)
        self._scheduler.forget(job)
        if fresh is not None:
            self._scheduler.observe(fresh)

    def _idle(self, device_id: str, now: float) -> list[DriverConnection]:
        """Connections that may take a job now; none while the device's queue is held."""
        if self._registry.get(device_id) is not None and not self._registry.accepts_work(device_id):
            return []  # quarantined or revoked: its queue is held, jobs say why
        if not self._schedule.availability(device_id, now).runs_jobs:
            return []  # maintenance or retired: the queue waits, jobs say why
        return [c for c in self._fleet.for_device(device_id) if c.dispatchable(now)]

    def _connection_for(
        self, job: Job, idle: list[DriverConnection], now: float
    ) -> DriverConnection | None:
        """The first idle connection whose export class the job's owner may use. None when
        only a busy attested connection's class allows it (the job waits for that one); the
        first idle one when none does (so the job is denied, with the rule, as it would be
        on any connection)."""
        device = self._registry.get(job.device_id)
        if device is None:
            return idle[0]
        for conn in idle:
            if self._decisions.decide(job, device, conn, now).allowed:
                return conn
        busy = [
            c
            for c in self._fleet.for_device(job.device_id)
            if c not in idle and c.dispatchable_now(now)
        ]
        if any(self._decisions.decide(job, device, c, now).allowed for c in busy):
            return None
        return idle[0]

    async def _next(self, device_id: str, now: float) -> Job | None:
        # In a reservation window only the reserving project's jobs move, and while a
        # session holds the device only its jobs do; the rest wait and say why.
        session = self._sessions.active(device_id)
        return await self._scheduler.next_job(
            device_id,
            self._schedule.availability(device_id, now).projects,
            session=session.session_id if session is not None else None,
        )

    async def _dispatch_or_deny(self, job: Job, conn: DriverConnection, now: float) -> bool:
        """Dispatch (or deny) `job`; False when its stored version had moved on meanwhile."""
        device = self._registry.get(job.device_id)
        if device is None:
            failed = job.transition(
                JobState.FAILED, now=now, reason=f"device {job.device_id!r} was retired"
            )
            return await self._leases.save(job, failed, "job.failed", {"reason": failed.reason})
        decision = self._decisions.decide(job, device, conn, now)
        if not decision.allowed:
            return await self._decisions.deny(job, decision, now, stage="dispatch")
        await self._lease_all([self._reserve(job, conn, decision, now)])
        return True

    def _reserve(self, job: Job, conn: DriverConnection, decision: Decision, now: float) -> _Grant:
        """The job leased to `conn`, held by it and claimed on the queue book (so the pass
        picks the next job), not yet written: `_lease_all` writes it or drops the claim."""
        assert conn.attestation is not None
        lease = Lease(
            lease_id=self._leases.new_lease_id(),
            device_id=job.device_id,
            expires_at=now + self._timing.lease_seconds,
            dispatch_nonce=secrets.token_bytes(32),
        )
        claims = conn.attestation.claims
        leased = dataclasses.replace(
            job.transition(JobState.DISPATCHED, now=now, lease=lease),
            evidence_digest=conn.attestation.evidence_digest,
            calibration_digest=claims.measurements.calibration_digest if claims else "",
        )
        conn.leases[lease.lease_id] = leased
        self._scheduler.claim(job.job_id)
        return _Grant(job=job, leased=leased, conn=conn, rule_id=decision.rule_id, at=now)

    async def _lease_all(self, grants: list[_Grant]) -> None:
        """Write the reserved leases together, then decide each again and send it, in order.

        Decide again on committed state: the access records are read after the lease writes
        (queued behind them on the one store thread, so in their transaction or a later one),
        so whatever another writer (a replica, an operator) committed before that read is
        seen. All the calls are queued before any is awaited, so the store can commit them
        together. A write or read that failed (the store is away) stops the pass once the rest
        of the lot is settled: the dispatcher retries on the next kick, no hot loop."""
        writes = [self._leases.save(g.job, g.leased, "job.dispatched", g.detail()) for g in grants]
        try:
            *written, refreshed = await asyncio.gather(
                *writes, self._records.refresh(), return_exceptions=True
            )
            if any(outcome is True for outcome in written):
                # A quarantine or revocation made through a replica.
                await self._registry.refresh()
        except BaseException:
            # Cancelled, or the registry unreadable: no lease of the lot may stay with its
            # connection. One whose write committed is given back by the lease reaper, since
            # no connection holds it.
            self._drop(grants)
            raise
        failures = [o for o in (*written, refreshed) if isinstance(o, BaseException)]
        for grant, outcome in zip(grants, written, strict=True):
            if outcome is True and not isinstance(refreshed, BaseException):
                await self._send_lease(grant)
                continue
            grant.conn.leases.pop(grant.lease_id, None)
            if outcome is False:
                await self._resync(grant.job)
            elif isinstance(outcome, BaseException):
                # Nothing of a failed write is durable: the job is still queued as it was.
                self._scheduler.unclaim(grant.job.job_id)
            else:  # written, but the records could not be read again: it never leaves
                await self._leases.release(
                    grant.leased, "access records unreadable before dispatch", "gate"
                )
        if failures:
            raise failures[0]

    def _drop(self, grants: list[_Grant]) -> None:
        for grant in grants:
            grant.conn.leases.pop(grant.lease_id, None)
            self._scheduler.unclaim(grant.job.job_id)

    async def _send_lease(self, grant: _Grant) -> None:
        conn, leased = grant.conn, grant.leased
        left = self._clock.now()
        device = self._registry.get(leased.device_id)
        if device is None or not (
            self._registry.accepts_work(leased.device_id)
            and conn.dispatchable_now(left)
            and self._fleet.get(conn.peer) is conn  # not dropped while the lease was written
            and grant.lease_id in conn.leases  # not taken back while the lease was written
        ):
            # Revoked, quarantined or dropped while the lease was being written: it never leaves.
            conn.leases.pop(grant.lease_id, None)
            await self._leases.release(
                leased, "device stopped accepting work before dispatch", "gate"
            )
            return
        again = self._decisions.decide(leased, device, conn, left)
        if not again.allowed:
            # The clearance changed while the lease was being written: it never leaves.
            conn.leases.pop(grant.lease_id, None)
            await self._decisions.deny(leased, again, left, stage="dispatch")
            return
        if leased.attempts == 1:
            self._metrics.queue_wait.labels(leased.device_id).observe(
                grant.at - grant.job.created_at
            )
        assert leased.lease is not None
        if not await self._link.send(conn.peer, self._grant(conn, leased, leased.lease)):
            await self._leases.disconnect(conn, "driver unreachable when the lease was sent")

    async def _send_canary(self, conn: DriverConnection, now: float) -> None:
        job = self._canary.lease(
            conn.device_id, conn.profile.num_qubits, now, self._timing.lease_seconds
        )
        assert job.lease is not None
        conn.leases[job.lease.lease_id], conn.canary_lease = job, job.lease.lease_id
        if not await self._link.send(conn.peer, self._grant(conn, job, job.lease)):
            await self._leases.disconnect(conn, "driver unreachable when a canary was sent")

    def _grant(self, conn: DriverConnection, job: Job, lease: Lease) -> m.LeaseGrant:
        return m.LeaseGrant(
            grant_key=conn.grant_key,  # sealed to this connection alone, not to its link key
            lease_id=lease.lease_id,
            job_id=job.job_id,
            circuit=job.circuit,
            shots=job.shots,
            dispatch_nonce=lease.dispatch_nonce,
            lease_seconds=self._timing.lease_seconds,
            memory=job.memory,
        )
