"""Checking a fetched result before anyone reads it, and what it ran under.

The receipt is checked offline with `Client.verify_result` (device certificate against the
facility root, signature, every bound field, the evidence it names) against what *this client*
submitted: its own job id, the digest of the payload it sent and the shots it asked for, not
whatever the broker reports now. The device, the shot total and the broker's view of the
evidence and calibration (when it reports them) must agree as well.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from qiskit.providers import JobError

from attestation.dsse import Envelope, EnvelopeError
from attestation.evidence import EvidenceError, decode_claims
from qtestbed.client import Client
from qtestbed.v1 import jobs_pb2


class ReceiptVerificationError(JobError):  # type: ignore[misc]
    """A result whose receipt does not hold: its counts are not handed out."""

    def __init__(self, job_id: str, problems: list[str]) -> None:
        self.job_id = job_id
        self.problems = tuple(problems)
        listed = "; ".join(problems)
        super().__init__(f"receipt of job {job_id} does not verify, result refused: {listed}")


@dataclass(frozen=True, kw_only=True, slots=True)
class Expected:
    """What the client asked for, which the receipt must match."""

    job_id: str
    device_id: str
    circuit_digest: str
    shots: int
    memory: bool = False  # per-shot memory was asked for, so the result must carry it


@dataclass(frozen=True, kw_only=True, slots=True)
class Attestation:
    """The attested state a job ran under.

    `evidence_digest` names the attestation evidence (the receipt binds the same digest) and
    `calibration_digest` the calibration that evidence measured; `measurements` holds all of it
    (firmware, control software, driver build, qubit count, two-qubit error). `verified` is
    False only for results fetched with `verify=False`.
    """

    job_id: str
    device_id: str
    evidence_digest: str
    calibration_digest: str
    measurements: Mapping[str, object] = field(default_factory=dict)
    evidence: bytes = b""
    verified: bool = False


def attestation_of(result: jobs_pb2.JobResult, job: jobs_pb2.Job, *, verified: bool) -> Attestation:
    """Read from the evidence itself when it parses, else from what the broker says."""
    evidence_digest, measurements = job.evidence_digest, dict[str, object]()
    try:
        envelope = Envelope.from_json(result.evidence)
        evidence_digest = envelope.digest()
        measurements = dict(decode_claims(envelope.payload).measurements.as_dict())
    except (EnvelopeError, EvidenceError, ValueError):
        pass
    calibration = measurements.get("calibration_digest")
    return Attestation(
        job_id=job.job_id,
        device_id=result.device_id,
        evidence_digest=evidence_digest,
        calibration_digest=str(calibration) if calibration else job.calibration_digest,
        measurements=measurements,
        evidence=result.evidence,
        verified=verified,
    )


def problems_with(
    client: Client, result: jobs_pb2.JobResult, job: jobs_pb2.Job, expected: Expected
) -> list[str]:
    """Every reason not to trust `result`; an empty list means it holds."""
    claimed = jobs_pb2.Job(
        job_id=expected.job_id, circuit_digest=expected.circuit_digest, shots=expected.shots
    )
    problems = list(client.verify_result(result, claimed))
    if result.job_id != expected.job_id:
        problems.append(f"result is for job {result.job_id!r}")
    if result.device_id != expected.device_id:
        problems.append(
            f"result comes from device {result.device_id!r}, not {expected.device_id!r}"
        )
    if job.circuit_digest != expected.circuit_digest:
        problems.append("the broker recorded a different circuit than the one submitted")
    if expected.memory and not result.memory_width:
        problems.append("per-shot memory was asked for and the result carries none")
    total = sum(result.counts.values())
    if total != expected.shots:
        problems.append(f"counts add up to {total} shots, {expected.shots} were asked for")
    attested = attestation_of(result, job, verified=True)
    if job.evidence_digest and job.evidence_digest != attested.evidence_digest:
        problems.append("the broker names other attestation evidence than the receipt does")
    if job.calibration_digest and job.calibration_digest != attested.calibration_digest:
        problems.append("the broker names another calibration than the attested evidence")
    return problems
