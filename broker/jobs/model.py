"""Jobs in domain terms: their states, the one place their transitions are checked, circuits,
leases and results. Plain data; protobuf messages never reach this module."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from qtestbed.shared.circuits import CircuitFormat


class JobState(enum.Enum):
    """Where a job is in its life."""

    QUEUED = "QUEUED"  # accepted and durable, waiting for its device
    DISPATCHED = "DISPATCHED"  # leased to a driver; the driver has not yet said it started
    RUNNING = "RUNNING"  # the driver reported that execution began
    COMPLETED = "COMPLETED"  # result and verified receipt stored
    FAILED = "FAILED"  # the driver reported an error, or the retry limit was reached
    CANCELLED = "CANCELLED"  # cancelled by its owner (or an operator)
    DENIED = "DENIED"  # refused by the clearance gate, at submit or right before dispatch

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.DENIED})


# The only legal moves. DISPATCHED/RUNNING -> QUEUED: the lease expired or its driver vanished.
# DISPATCHED -> DENIED: the clearance re-checked after the lease write refused the job, whose
# grant was then never sent.
ALLOWED_TRANSITIONS: Mapping[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.DISPATCHED, JobState.CANCELLED, JobState.DENIED}),
    JobState.DISPATCHED: frozenset(
        {
            JobState.RUNNING,
            JobState.COMPLETED,
            JobState.FAILED,
            JobState.CANCELLED,
            JobState.QUEUED,
            JobState.DENIED,
        }
    ),
    JobState.RUNNING: frozenset(
        {JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.QUEUED}
    ),
    JobState.COMPLETED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
    JobState.DENIED: frozenset(),
}


@dataclass(frozen=True, kw_only=True, slots=True)
class Circuit:
    """A circuit that passed validation; `digest` is SHA-256 hex of the exact payload bytes."""

    format: CircuitFormat
    payload: bytes
    digest: str
    num_qubits: int
    depth: int


@dataclass(frozen=True, kw_only=True, slots=True)
class Lease:
    """A job's loan to one driver until `expires_at`, bound to a single-use dispatch nonce."""

    lease_id: str
    device_id: str
    expires_at: float
    dispatch_nonce: bytes


class IllegalTransition(Exception):
    """A state change that the job state machine does not allow."""

    def __init__(self, job_id: str, current: JobState, target: JobState) -> None:
        super().__init__(f"job {job_id}: {current.value} -> {target.value} is not allowed")
        self.job_id = job_id
        self.current = current
        self.target = target


# Priority classes within a project (the proto's JobPriority values).
PRIORITY_LOW = 1


PRIORITY_NORMAL = 2


PRIORITY_HIGH = 3
PRIORITIES = frozenset({PRIORITY_LOW, PRIORITY_NORMAL, PRIORITY_HIGH})


@dataclass(frozen=True, kw_only=True, slots=True)
class Job:
    """One researcher's request to run a circuit on a device.

    `version` increases with every saved change; stores use it for compare-and-set so two
    writers (two broker replicas, or a late driver and a lease reaper) can never both win.
    """

    job_id: str
    owner: str
    device_id: str
    circuit: Circuit
    shots: int
    state: JobState
    created_at: float
    updated_at: float
    idempotency_key: str | None = None
    project: str = ""
    attempts: int = 0
    lease: Lease | None = None
    reason: str = ""
    rule_id: str = ""
    dispatched_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    version: int = 1
    priority: int = PRIORITY_NORMAL
    session_id: str = ""
    # Set at dispatch: the evidence the device last attested with and its calibration digest.
    evidence_digest: str = ""
    calibration_digest: str = ""
    # The researcher asked for every shot's outcome (per-shot memory) as well as counts.
    memory: bool = False
    # Fixed when the job is first queued (broker.jobs.scheduler.price): its place within its
    # project (submission time less the priority's lead) and what its slot adds to its
    # project's fair-share tag (expected device seconds over the project's weight).
    place_at: float = 0.0
    queue_cost: float = 0.0

    def transition(
        self,
        target: JobState,
        *,
        now: float,
        reason: str = "",
        rule_id: str = "",
        lease: Lease | None = None,
    ) -> Job:
        """Return this job moved to `target`, or raise IllegalTransition.

        Entering DISPATCHED requires a lease and counts an attempt; leaving the leased states
        drops the lease, so a late message from the old driver can no longer match it.
        """
        if target not in ALLOWED_TRANSITIONS[self.state]:
            raise IllegalTransition(self.job_id, self.state, target)
        changes: dict[str, Any] = {
            "state": target,
            "updated_at": now,
            "version": self.version + 1,
            "reason": reason,
            "rule_id": rule_id,
        }
        if target is JobState.DISPATCHED:
            if lease is None:
                raise ValueError("entering DISPATCHED needs a lease")
            changes.update(lease=lease, attempts=self.attempts + 1, dispatched_at=now)
            changes.update(started_at=None)
        elif target is JobState.RUNNING:
            changes["started_at"] = now
        else:
            changes["lease"] = None
        if target.terminal:
            changes["finished_at"] = now
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, kw_only=True, slots=True)
class JobResult:
    """What a device returned for a job, with the receipt it signed (a DSSE envelope, JSON)."""

    job_id: str
    device_id: str
    counts: Mapping[str, int]
    execution_seconds: float
    receipt: bytes
    stored_at: float
    # OpenQASM 3 text of the circuit the device ran, when it translated the one submitted;
    # empty when it ran the submitted circuit as sent (the receipt names which).
    executed_circuit: bytes = b""
    # Per-shot memory (attestation.shot_memory layout); width 0 when the job asked for none.
    memory: bytes = b""
    memory_width: int = 0


class IdempotencyKeyReused(Exception):
    """A job's idempotency key already names a different request of its owner; the store
    wrote nothing (the whole batch is refused)."""

    def __init__(self, key: str, existing_job_id: str) -> None:
        super().__init__(f"idempotency key {key!r} already names job {existing_job_id}")
        self.key = key
        self.existing_job_id = existing_job_id


def check_same_request(stored: Job, attempted: Job) -> Job:
    """`stored`, when `attempted` repeats its request (a retry under the same idempotency key);
    IdempotencyKeyReused when the key was used for another device, circuit or shot count."""
    same = (stored.device_id, stored.circuit.digest, stored.shots, stored.memory) == (
        attempted.device_id,
        attempted.circuit.digest,
        attempted.shots,
        attempted.memory,
    )
    if not same:
        raise IdempotencyKeyReused(attempted.idempotency_key or "", stored.job_id)
    return stored


@dataclass(frozen=True, kw_only=True, slots=True)
class QueueLane:
    """One project's lane of a device's queue as the store keeps it (broker.store.sql_queue):
    its slots carry ordinals head .. tail - 1, one per queued job."""

    device_id: str
    project: str
    head: int
    tail: int

    @property
    def depth(self) -> int:
        return self.tail - self.head
