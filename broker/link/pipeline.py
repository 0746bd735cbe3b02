"""The dispatch gate's decision, and what it means for leases a driver holds but has not started.

A driver may hold several leases at once (its pipeline), so a job can wait in the driver's
queue after its grant left. The grant stands only while the decision that sent it still holds:
whenever the device's queue moves (every result, every tick, every access, device or
attestation change kicks it) each lease whose job has not started is decided again, on the
records as they are then, and one that no longer passes is withdrawn before anything else is
leased. Withdrawn means: the connection stops holding it (a start or result for it is refused
from then on, so its result is never accepted), the driver is told to drop it (a LeaseCancel;
the driver runs no lease it was told to drop), and the job says why. A clearance that no
longer allows the device denies the job with the rule, as at dispatch; a device that stopped
accepting work, or a connection whose attestation no longer affirms, gives the job back to the
queue. A job already running when a change is committed finishes as it would have with one
lease in flight.
"""

from __future__ import annotations

from broker.access.clearance import ClearanceGate, Decision
from broker.clock import Clock
from broker.devices.model import DeviceRecord
from broker.devices.operations import DeviceSchedule
from broker.devices.registry import DeviceRegistry
from broker.jobs.model import Job, JobState
from broker.link.fleet import DriverConnection, Fleet
from broker.link.leases import LeaseKeeper
from broker.metrics import BrokerMetrics
from broker.policy import Action, JobAttributes


class DispatchDecisions:
    """The gate's word on a job going to one connection, and the denial that follows a no."""

    def __init__(
        self,
        *,
        gate: ClearanceGate,
        leases: LeaseKeeper,
        metrics: BrokerMetrics,
    ) -> None:
        self._gate = gate
        self._leases = leases
        self._metrics = metrics

    def decide(
        self, job: Job, device: DeviceRecord, conn: DriverConnection, now: float
    ) -> Decision:
        """The gate's decision on `job` going to `conn`: with that connection's own export
        class and attestation status, never another connection's."""
        assert conn.attestation is not None  # dispatchable_now() checked it
        return self._gate.check(
            Action.DISPATCH_JOB,
            job.owner,
            device,
            now=now,
            job=JobAttributes(project=job.project, shots=job.shots, qubits=job.circuit.num_qubits),
            attestation=conn.attestation.status.value,
            export_class=conn.export_class.classification if conn.export_class else None,
        )

    async def deny(self, job: Job, decision: Decision, now: float, *, stage: str) -> bool:
        """The clearance changed since submit (or since its lease was written, or granted
        and not yet started): the job does not run, and says why. False when its stored
        version had moved on meanwhile."""
        denied = job.transition(
            JobState.DENIED, now=now, reason=decision.reason, rule_id=decision.rule_id
        )
        detail = {
            "stage": stage,
            "rule": decision.rule_id,
            "device": job.device_id,
            "reason": decision.reason,
        }
        if job.lease is not None:
            detail["lease"] = job.lease.lease_id  # written or granted, withdrawn unstarted
        if not await self._leases.save(job, denied, "clearance.denied", detail):
            return False
        self._metrics.denials.labels(decision.rule_id, "dispatch").inc()
        return True


class PendingLeases:
    """Decides again, for each lease granted but not started, whether its grant still stands."""

    def __init__(
        self,
        *,
        fleet: Fleet,
        registry: DeviceRegistry,
        schedule: DeviceSchedule,
        decisions: DispatchDecisions,
        leases: LeaseKeeper,
        clock: Clock,
    ) -> None:
        self._fleet = fleet
        self._registry = registry
        self._schedule = schedule
        self._decisions = decisions
        self._leases = leases
        self._clock = clock

    async def recheck(self, device_id: str) -> int:
        """Withdraw every unstarted lease of the device whose grant no longer stands; how many."""
        withdrawn = 0
        for conn in self._fleet.for_device(device_id):
            for lease_id, job in conn.pending():
                if lease_id not in conn.leases:
                    continue  # ended while an earlier withdrawal was being written
                if await self._settle(conn, lease_id, job):
                    withdrawn += 1
        return withdrawn

    async def _settle(self, conn: DriverConnection, lease_id: str, job: Job) -> bool:
        now = self._clock.now()
        device = self._registry.get(job.device_id)
        held = (
            device is not None
            and self._registry.accepts_work(job.device_id)
            and self._schedule.availability(job.device_id, now).runs_jobs
            and conn.dispatchable_now(now)
        )
        if not held:
            # Withdrawn before any await, so nothing the driver sends meanwhile is accepted.
            await self._leases.withdraw(conn, lease_id)
            await self._leases.release(
                job, "the device stopped taking work before the job started", "withdrawn"
            )
            return True
        assert device is not None
        decision = self._decisions.decide(job, device, conn, now)
        if decision.allowed:
            return False
        await self._leases.withdraw(conn, lease_id)
        await self._decisions.deny(job, decision, now, stage="pipeline")
        return True
