"""A researcher's proof that their job's completion is in the signed audit log.

Only the job's owner (or an operator) gets one, and only for a COMPLETED job: someone else's
job, a hidden one and a missing one get the same NOT_FOUND from the same read as GetJob.
"""

from __future__ import annotations

from broker.audit.proofs import EntryProof, InclusionProofs
from broker.errors import BrokerError, ErrorCode
from broker.jobs.model import JobState
from broker.jobs.service import JobService


class ResultProofService:
    def __init__(self, *, jobs: JobService, proofs: InclusionProofs) -> None:
        self._jobs = jobs
        self._proofs = proofs

    async def proof(self, caller: str, job_id: str) -> EntryProof:
        view = await self._jobs.get(caller, job_id)  # NOT_FOUND unless the caller may see it
        if view.job.state is not JobState.COMPLETED:
            raise BrokerError(
                ErrorCode.FAILED_PRECONDITION,
                f"job {job_id} is {view.job.state.value}; only a COMPLETED job's result is "
                "recorded in the audit log",
            )
        return await self._proofs.completed_entry(job_id)
