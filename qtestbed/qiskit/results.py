"""Verified outcomes as a Qiskit `Result`: one experiment per circuit, counts in hex with the
circuit's header so `get_counts()` splits multi-register outcomes as Qiskit prints them, and,
when the run asked for `memory`, every shot's outcome in hex in shot order (`get_memory()`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from qiskit.result import Result
from qiskit.result.models import ExperimentResult, ExperimentResultData

if TYPE_CHECKING:
    from qtestbed.qiskit.job import Outcome


def to_qiskit_result(
    outcomes: Sequence[Outcome], *, backend_name: str, backend_version: str, job_id: str
) -> Result:
    experiments = [
        ExperimentResult(
            shots=outcome.submitted.shots,
            success=True,
            data=ExperimentResultData(
                counts={hex(value): count for value, count in outcome.counts.items()},
                memory=None if outcome.memory is None else [hex(v) for v in outcome.memory],
            ),
            header=outcome.submitted.layout.header(),
            status="DONE",
            time_taken=outcome.result.execution_seconds,
            job_id=outcome.job.job_id,
            evidence_digest=outcome.attestation.evidence_digest,
            calibration_digest=outcome.attestation.calibration_digest,
            receipt_verified=outcome.attestation.verified,
        )
        for outcome in outcomes
    ]
    return Result(
        backend_name=backend_name,
        backend_version=backend_version,
        job_id=job_id,
        success=True,
        results=experiments,
        status="COMPLETED",
    )
