"""JobService messages <-> domain objects: pure functions, the only place jobs_pb2 is read."""

from __future__ import annotations

from broker.access.quota import QuotaStatus
from broker.audit.proofs import EntryProof
from broker.errors import BrokerError, ErrorCode
from broker.jobs.model import JobState
from broker.jobs.selection import DeviceSelector
from broker.jobs.service import ResultView
from broker.jobs.session_model import Session
from broker.jobs.submit import SubmitRequest
from broker.jobs.views import JobView
from qtestbed.shared.wire import format_from_proto, to_timestamp
from qtestbed.v1 import jobs_pb2

_STATE_TO_PROTO = {state: jobs_pb2.JobState.Value(f"JOB_STATE_{state.value}") for state in JobState}
_STATE_FROM_PROTO = {v: k for k, v in _STATE_TO_PROTO.items()}

MAX_IDEMPOTENCY_KEY = 128


def submit_from_proto(request: jobs_pb2.SubmitJobRequest) -> SubmitRequest:
    fmt = format_from_proto(request.circuit.format)
    if fmt is None:
        raise BrokerError(
            ErrorCode.INVALID_ARGUMENT,
            "circuit.format must be OPENQASM2, OPENQASM3 or QPY",
        )
    selector = None
    if request.HasField("selector"):
        sel = request.selector
        if sel.max_two_qubit_error < 0 or sel.max_two_qubit_error >= 1:
            raise BrokerError(
                ErrorCode.INVALID_ARGUMENT, "selector.max_two_qubit_error must be in [0, 1)"
            )
        selector = DeviceSelector(
            min_qubits=sel.min_qubits,
            basis_gates=frozenset(sel.basis_gates),
            tier=sel.tier,
            max_two_qubit_error=sel.max_two_qubit_error,
        )
    if len(request.idempotency_key) > MAX_IDEMPOTENCY_KEY:
        raise BrokerError(
            ErrorCode.INVALID_ARGUMENT,
            f"idempotency_key is longer than {MAX_IDEMPOTENCY_KEY} characters",
        )
    return SubmitRequest(
        device_id=request.device_id,
        circuit_format=fmt,
        payload=request.circuit.payload,
        shots=request.shots,
        idempotency_key=request.idempotency_key or None,
        project=request.project,
        priority=request.priority or jobs_pb2.JOB_PRIORITY_NORMAL,
        selector=selector,
        session_id=request.session_id,
        memory=request.memory,
    )


def states_from_proto(states: list[int]) -> list[JobState]:
    try:
        return [_STATE_FROM_PROTO[jobs_pb2.JobState.ValueType(s)] for s in states]
    except KeyError as exc:
        raise BrokerError(ErrorCode.INVALID_ARGUMENT, f"unknown job state {exc.args[0]}") from exc


def job_to_proto(view: JobView) -> jobs_pb2.Job:
    job = view.job
    return jobs_pb2.Job(
        job_id=job.job_id,
        owner=job.owner,
        device_id=job.device_id,
        state=_STATE_TO_PROTO[job.state],
        shots=job.shots,
        circuit_digest=job.circuit.digest,
        num_qubits=job.circuit.num_qubits,
        depth=job.circuit.depth,
        queue_position=view.queue_position,
        attempts=job.attempts,
        reason=job.reason,
        rule_id=job.rule_id,
        created_at=to_timestamp(job.created_at),
        updated_at=to_timestamp(job.updated_at),
        finished_at=to_timestamp(job.finished_at),
        waiting_for=view.waiting_for,
        project=job.project,
        priority=job.priority,  # type: ignore[arg-type]
        session_id=job.session_id,
        eta=to_timestamp(view.eta),
        device_queue_depth=view.device_queue_depth,
        evidence_digest=job.evidence_digest,
        calibration_digest=job.calibration_digest,
        memory=job.memory,
    )


def session_to_proto(session: Session) -> jobs_pb2.Session:
    return jobs_pb2.Session(
        session_id=session.session_id,
        owner=session.owner,
        device_id=session.device_id,
        project=session.project,
        state=jobs_pb2.SESSION_STATE_OPEN if session.open else jobs_pb2.SESSION_STATE_CLOSED,
        opened_at=to_timestamp(session.opened_at),
        last_activity_at=to_timestamp(session.last_activity_at),
        closes_at=to_timestamp(session.closes_at),
        idle_timeout_seconds=session.idle_timeout_seconds,
        closed_reason=session.closed_reason,
        jobs=session.jobs,
        closed_at=to_timestamp(session.closed_at),
    )


def result_proof_to_proto(proof: EntryProof) -> jobs_pb2.ResultProof:
    return jobs_pb2.ResultProof(
        entry=proof.entry,
        leaf_index=proof.leaf_index,
        tree_size=proof.tree_size,
        audit_path=list(proof.audit_path),
        checkpoint=proof.checkpoint,
        cosignatures=list(proof.cosignatures),
        witnessed=proof.witnessed,
    )


def result_to_proto(view: ResultView) -> jobs_pb2.JobResult:
    result = view.result
    return jobs_pb2.JobResult(
        job_id=result.job_id,
        device_id=result.device_id,
        counts=dict(result.counts),
        execution_seconds=result.execution_seconds,
        receipt=result.receipt,
        device_certificate=view.device_certificate,
        evidence=view.evidence,
        executed_circuit=result.executed_circuit,
        memory=result.memory,
        memory_width=result.memory_width,
    )


_UINT32_MAX = 2**32 - 1
_UINT64_MAX = 2**64 - 1


def quota_to_proto(status: QuotaStatus) -> jobs_pb2.QuotaUsage:
    usage = status.usage
    jobs_left = (
        max(status.max_active_jobs - usage.active_jobs, 0)
        if status.max_active_jobs
        else _UINT32_MAX
    )
    shots_left = (
        max(status.max_shots_per_day - usage.shots_last_day, 0)
        if status.max_shots_per_day
        else _UINT64_MAX
    )
    return jobs_pb2.QuotaUsage(
        scope=status.scope,
        name=status.name,
        max_active_jobs=status.max_active_jobs,
        max_shots_per_day=status.max_shots_per_day,
        active_jobs=usage.active_jobs,
        shots_last_day=usage.shots_last_day,
        remaining_active_jobs=jobs_left,
        remaining_shots=shots_left,
    )
