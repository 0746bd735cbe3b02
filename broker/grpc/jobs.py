"""JobService over gRPC: transport only. Each method decodes with `broker.grpc.codec.jobs`,
calls the domain service and encodes its answer; errors are the interceptor's."""

from __future__ import annotations

from typing import Any

from broker.errors import BrokerError, ErrorCode
from broker.grpc.codec import jobs as codec
from broker.grpc.interceptor import CALLER
from broker.jobs.result_proofs import ResultProofService
from broker.jobs.service import JobService
from broker.jobs.session_service import SessionService
from broker.jobs.submit import Submission
from qtestbed.v1 import jobs_pb2, jobs_pb2_grpc

_MAX_PAGE = 500


class JobServicer(jobs_pb2_grpc.JobServiceServicer):
    def __init__(
        self,
        *,
        jobs: JobService,
        submission: Submission,
        sessions: SessionService,
        proofs: ResultProofService,
    ) -> None:
        self._jobs = jobs
        self._submission = submission
        self._sessions = sessions
        self._proofs = proofs

    async def SubmitJob(self, request: jobs_pb2.SubmitJobRequest, context: Any) -> Any:
        [(view, created)] = await self._submission.submit_many(
            CALLER.get(), [codec.submit_from_proto(request)]
        )
        return jobs_pb2.SubmitJobResponse(job=codec.job_to_proto(view), created=created)

    async def SubmitJobs(self, request: jobs_pb2.SubmitJobsRequest, context: Any) -> Any:
        submitted = await self._submission.submit_many(
            CALLER.get(), [codec.submit_from_proto(r) for r in request.jobs]
        )
        return jobs_pb2.SubmitJobsResponse(
            jobs=[
                jobs_pb2.SubmitJobResponse(job=codec.job_to_proto(view), created=created)
                for view, created in submitted
            ]
        )

    async def GetJob(self, request: jobs_pb2.GetJobRequest, context: Any) -> Any:
        return codec.job_to_proto(await self._jobs.get(CALLER.get(), request.job_id))

    async def WatchJob(self, request: jobs_pb2.WatchJobRequest, context: Any) -> Any:
        async for view in self._jobs.watch(CALLER.get(), request.job_id):
            yield jobs_pb2.JobEvent(job=codec.job_to_proto(view))

    async def CancelJob(self, request: jobs_pb2.CancelJobRequest, context: Any) -> Any:
        view = await self._jobs.cancel(CALLER.get(), request.job_id, request.reason)
        return codec.job_to_proto(view)

    async def ListJobs(self, request: jobs_pb2.ListJobsRequest, context: Any) -> Any:
        limit = min(request.page_size or 50, _MAX_PAGE)
        rows = await self._jobs.list_jobs(
            CALLER.get(),
            device_id=request.device_id or None,
            states=codec.states_from_proto(list(request.states)),
            limit=limit,
            before_seq=_page_token(request.page_token),
        )
        token = str(rows[-1][0]) if len(rows) == limit else ""
        return jobs_pb2.ListJobsResponse(
            jobs=[codec.job_to_proto(v) for _, v in rows], next_page_token=token
        )

    async def GetResult(self, request: jobs_pb2.GetResultRequest, context: Any) -> Any:
        return codec.result_to_proto(await self._jobs.result(CALLER.get(), request.job_id))

    async def GetResultProof(self, request: jobs_pb2.GetResultProofRequest, context: Any) -> Any:
        proof = await self._proofs.proof(CALLER.get(), request.job_id)
        return codec.result_proof_to_proto(proof)

    async def GetQuota(self, request: jobs_pb2.GetQuotaRequest, context: Any) -> Any:
        statuses = await self._jobs.quota(CALLER.get(), request.project)
        return jobs_pb2.GetQuotaResponse(quotas=[codec.quota_to_proto(q) for q in statuses])

    async def OpenSession(self, request: jobs_pb2.OpenSessionRequest, context: Any) -> Any:
        session = await self._sessions.open(
            CALLER.get(), request.device_id, request.project, request.max_seconds
        )
        return codec.session_to_proto(session)

    async def GetSession(self, request: jobs_pb2.GetSessionRequest, context: Any) -> Any:
        return codec.session_to_proto(await self._sessions.get(CALLER.get(), request.session_id))

    async def CloseSession(self, request: jobs_pb2.CloseSessionRequest, context: Any) -> Any:
        session = await self._sessions.close(CALLER.get(), request.session_id, request.reason)
        return codec.session_to_proto(session)

    async def ListSessions(self, request: jobs_pb2.ListSessionsRequest, context: Any) -> Any:
        sessions = await self._sessions.list(
            CALLER.get(), request.device_id, request.include_closed
        )
        return jobs_pb2.ListSessionsResponse(sessions=[codec.session_to_proto(s) for s in sessions])


def _page_token(token: str) -> int | None:
    if not token:
        return None
    if not token.isdigit():
        raise BrokerError(ErrorCode.INVALID_ARGUMENT, "page_token is not one this broker issued")
    return int(token)
