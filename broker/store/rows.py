"""Row <-> domain mapping shared by both stores, so a column means the same thing in each."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from broker.audit.model import AuditEntry, AuditEvent
from broker.jobs.model import Circuit, Job, JobResult, JobState, Lease
from qtestbed.shared.circuits import CircuitFormat

# Column order of every job SELECT and INSERT; `seq` is assigned by the database.
JOB_COLUMNS: tuple[str, ...] = (
    "job_id",
    "owner",
    "device_id",
    "state",
    "shots",
    "circuit_format",
    "circuit_payload",
    "circuit_digest",
    "num_qubits",
    "depth",
    "idempotency_key",
    "attempts",
    "lease_id",
    "lease_device_id",
    "lease_expires_at",
    "dispatch_nonce",
    "reason",
    "rule_id",
    "created_at",
    "updated_at",
    "dispatched_at",
    "started_at",
    "finished_at",
    "version",
    "project",
    "priority",
    "session_id",
    "evidence_digest",
    "calibration_digest",
    "memory",
    "place_at",
    "queue_cost",
)
JOB_SELECT = ", ".join(JOB_COLUMNS)

RESULT_COLUMNS = (
    "job_id, device_id, counts, execution_seconds, receipt, stored_at, executed_circuit, memory, "
    "memory_width"
)
AUDIT_COLUMNS = "seq, kind, actor, subject, at, detail, prev_hash, entry_hash"

Row = Sequence[Any]


def job_to_row(job: Job) -> tuple[Any, ...]:
    """Values in JOB_COLUMNS order."""
    lease = job.lease
    circuit = job.circuit
    return (
        job.job_id,
        job.owner,
        job.device_id,
        job.state.value,
        job.shots,
        circuit.format.value,
        circuit.payload,
        circuit.digest,
        circuit.num_qubits,
        circuit.depth,
        job.idempotency_key,
        job.attempts,
        lease.lease_id if lease else None,
        lease.device_id if lease else None,
        lease.expires_at if lease else None,
        lease.dispatch_nonce if lease else None,
        job.reason,
        job.rule_id,
        job.created_at,
        job.updated_at,
        job.dispatched_at,
        job.started_at,
        job.finished_at,
        job.version,
        job.project,
        job.priority,
        job.session_id,
        job.evidence_digest,
        job.calibration_digest,
        int(job.memory),
        job.place_at,
        job.queue_cost,
    )


def job_from_row(row: Row) -> Job:
    """Inverse of job_to_row; `row` holds JOB_COLUMNS in order."""
    r: Mapping[str, Any] = dict(zip(JOB_COLUMNS, row, strict=True))
    lease = None
    if r["lease_id"] is not None:
        lease = Lease(
            lease_id=r["lease_id"],
            device_id=r["lease_device_id"],
            expires_at=r["lease_expires_at"],
            dispatch_nonce=bytes(r["dispatch_nonce"]),
        )
    circuit = Circuit(
        format=CircuitFormat(r["circuit_format"]),
        payload=bytes(r["circuit_payload"]),
        digest=r["circuit_digest"],
        num_qubits=r["num_qubits"],
        depth=r["depth"],
    )
    return Job(
        job_id=r["job_id"],
        owner=r["owner"],
        device_id=r["device_id"],
        circuit=circuit,
        shots=r["shots"],
        state=JobState(r["state"]),
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        idempotency_key=r["idempotency_key"],
        attempts=r["attempts"],
        lease=lease,
        reason=r["reason"],
        rule_id=r["rule_id"],
        dispatched_at=r["dispatched_at"],
        started_at=r["started_at"],
        finished_at=r["finished_at"],
        version=r["version"],
        project=r["project"],
        priority=r["priority"],
        session_id=r["session_id"],
        evidence_digest=r["evidence_digest"],
        calibration_digest=r["calibration_digest"],
        memory=bool(r["memory"]),
        place_at=r["place_at"],
        queue_cost=r["queue_cost"],
    )


def result_to_row(result: JobResult) -> tuple[Any, ...]:
    counts = json.dumps(dict(result.counts), sort_keys=True, separators=(",", ":"))
    return (
        result.job_id,
        result.device_id,
        counts,
        result.execution_seconds,
        result.receipt,
        result.stored_at,
        result.executed_circuit,
        result.memory or None,  # NULL: no memory (most results)
        result.memory_width,
    )


def result_from_row(row: Row) -> JobResult:
    job_id, device_id, counts, execution_seconds, receipt, stored_at, executed, memory, width = row
    return JobResult(
        job_id=job_id,
        device_id=device_id,
        counts={str(k): int(v) for k, v in json.loads(counts).items()},
        execution_seconds=execution_seconds,
        receipt=bytes(receipt),
        stored_at=stored_at,
        executed_circuit=bytes(executed) if executed is not None else b"",
        memory=bytes(memory) if memory is not None else b"",
        memory_width=int(width),
    )


def audit_to_row(entry: AuditEntry) -> tuple[Any, ...]:
    event = entry.event
    # Sorted compact JSON, like the hashed form, so the stored text reads as what was hashed.
    detail = json.dumps(event.detail, sort_keys=True, separators=(",", ":"))
    return (
        entry.seq,
        event.kind,
        event.actor,
        event.subject,
        event.at,
        detail,
        entry.prev_hash,
        entry.entry_hash,
    )


def audit_from_row(row: Row) -> AuditEntry:
    seq, kind, actor, subject, at, detail, prev_hash, entry_hash = row
    event = AuditEvent(kind=kind, actor=actor, subject=subject, at=at, detail=json.loads(detail))
    return AuditEntry(seq=seq, event=event, prev_hash=prev_hash, entry_hash=entry_hash)
