"""Checking a result's receipt before it is stored: signed by the attested device's key over
this job, this lease's dispatch nonce and exactly these counts (and the per-shot memory, when
the job asked for it), naming the evidence the connection last attested with."""

from __future__ import annotations

from attestation.appraisal import AttestationResult, AttestationStatus, Reason, ReasonCode
from attestation.dsse import Envelope, EnvelopeError
from attestation.receipts import ReceiptError, decode_receipt, verify_receipt
from attestation.shot_memory import ShotMemory, ShotMemoryError
from broker.devices.model import DeviceStatus
from broker.devices.registry import DeviceRegistry
from broker.jobs.model import Job
from broker.link.fleet import DriverConnection
from broker.link.messages import LeaseResult


def receipt_problems(
    registry: DeviceRegistry,
    conn: DriverConnection,
    job: Job,
    result: LeaseResult,
) -> list[str]:
    """Every reason the receipt cannot be trusted for this job (empty when it holds)."""
    receipt, counts = result.receipt, result.counts
    device = registry.get(conn.device_id)
    if (
        device is None
        or device.status is DeviceStatus.REVOKED
        or job.lease is None
        or conn.attestation is None
        or conn.device_key is None
    ):
        return ["device is no longer registered, attested or trusted"]
    try:
        memory = _memory(job, result)
    except ShotMemoryError as exc:
        return [f"per-shot memory refused: {exc}"]
    problems = verify_receipt(
        receipt,
        conn.device_key,
        job_id=job.job_id,
        circuit_digest=job.circuit.digest,
        shots=job.shots,
        counts=dict(counts),
        dispatch_nonce=job.lease.dispatch_nonce,
        executed_circuit=result.executed_circuit,
        memory=memory,
    )
    try:
        claims = decode_receipt(Envelope.from_json(receipt))
    except (EnvelopeError, ReceiptError) as exc:
        return [*problems, f"receipt unreadable: {exc}"]
    # The driver may sign under the evidence the job was leased with even after it answered a
    # routine re-challenge (it switches when the verdict arrives); both are this connection's.
    attested = {conn.attestation.evidence_digest, job.evidence_digest} - {""}
    if claims.evidence_digest not in attested:
        problems.append(
            "receipt names evidence other than what the device attested with for this job"
        )
    if sum(counts.values()) != job.shots:
        problems.append(f"counts add up to {sum(counts.values())}, expected {job.shots} shots")
    return problems


def _memory(job: Job, result: LeaseResult) -> ShotMemory | None:
    """The result's memory, which must be there exactly when the job asked for it."""
    if not job.memory:
        if result.memory or result.memory_width:
            raise ShotMemoryError("the job asked for no per-shot memory")
        return None
    if not result.memory_width:
        raise ShotMemoryError("the job asked for per-shot memory and the result has none")
    return ShotMemory(result.memory_width, result.memory)


def contraindicated(conn: DriverConnection, detail: str, now: float) -> AttestationResult:
    """The result that keeps a connection that signed a bad receipt out until it attests
    again."""
    return AttestationResult(
        device_id=conn.device_id,
        status=AttestationStatus.CONTRAINDICATED,
        reasons=(Reason(code=ReasonCode.SIGNATURE_INVALID, detail=f"bad receipt: {detail}"),),
        claims=None,
        evidence_digest=conn.attestation.evidence_digest if conn.attestation else "",
        issued_at=now,
        expires_at=now,
    )
