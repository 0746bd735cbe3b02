"""The gRPC edge: authentication, the one error table, and thin servicers.

Servicers only translate (via `broker.codec`) and call the domain services; the caller's
identity comes from the verified client certificate, never from the request.
"""

from __future__ import annotations

import contextvars
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from broker.access.model import Principal
from broker.access.roles import authorize
from broker.devices.directory import DeviceDirectory
from broker.errors import BrokerError, ErrorCode
from broker.grpc.codec import jobs as codec
from broker.jobs.service import JobService
from qtestbed.shared.wire import RULE_ID_METADATA
from qtestbed.v1 import devices_pb2, devices_pb2_grpc, jobs_pb2, jobs_pb2_grpc

log = logging.getLogger(__name__)

CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("qtestbed_caller")

STATUS_FOR: dict[ErrorCode, grpc.StatusCode] = {
    ErrorCode.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorCode.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    ErrorCode.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorCode.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorCode.ABORTED: grpc.StatusCode.ABORTED,
    ErrorCode.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
}
_OPEN_METHODS = ("/grpc.health.v1.Health/",)


def _caller_of(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    names = context.auth_context().get("x509_common_name") or []
    if len(names) != 1:
        raise BrokerError(
            ErrorCode.UNAUTHENTICATED,
            "a client certificate issued by the facility CA is required",
        )
    return bytes(names[0]).decode()


async def _abort(context: grpc.aio.ServicerContext[Any, Any], exc: Exception) -> None:
    if isinstance(exc, BrokerError):
        if exc.rule_id:
            context.set_trailing_metadata(((RULE_ID_METADATA, exc.rule_id),))
        await context.abort(STATUS_FOR[exc.code], exc.detail)
    ref = uuid.uuid4().hex[:12]
    log.error("internal error (ref %s)", ref, exc_info=exc)
    await context.abort(
        grpc.StatusCode.INTERNAL, f"internal error; the broker logged the details under ref {ref}"
    )


class EdgeInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Authenticates every call and applies the error table, in one place for all methods."""

    def __init__(self, principal_of: Callable[[str], Principal | None]) -> None:
        self._principal_of = principal_of

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(_OPEN_METHODS):
            return handler
        method = details.method
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(method, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _authenticate(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        caller = _caller_of(context)
        principal = self._principal_of(caller)
        if principal is None:
            raise BrokerError(
                ErrorCode.UNAUTHENTICATED,
                f"certificate subject {caller!r} is not a registered principal of this facility",
            )
        authorize(method, principal)
        CALLER.set(caller)

    def _wrap_unary(
        self, method: str, behaviour: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Any]:
        async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                self._authenticate(method, context)
                return await behaviour(request, context)
            except (BrokerError, Exception) as exc:
                if isinstance(exc, grpc.aio.AbortError):
                    raise
                await _abort(context, exc)

        return call

    def _wrap_stream(
        self, method: str, behaviour: Callable[..., AsyncIterator[Any]]
    ) -> Callable[..., Any]:
        async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                self._authenticate(method, context)
                async for item in behaviour(request, context):
                    yield item
            except (BrokerError, Exception) as exc:
                if isinstance(exc, grpc.aio.AbortError):
                    raise
                await _abort(context, exc)

        return call


class JobServicer(jobs_pb2_grpc.JobServiceServicer):
    def __init__(self, service: JobService) -> None:
        self.service = service

    async def SubmitJob(self, request: jobs_pb2.SubmitJobRequest, context: Any) -> Any:
        view, created = await self.service.submit(CALLER.get(), codec.submit_from_proto(request))
        return jobs_pb2.SubmitJobResponse(job=codec.job_to_proto(view), created=created)

    async def SubmitJobs(self, request: jobs_pb2.SubmitJobsRequest, context: Any) -> Any:
        submitted = await self.service.submit_many(
            CALLER.get(), [codec.submit_from_proto(r) for r in request.jobs]
        )
        return jobs_pb2.SubmitJobsResponse(
            jobs=[
                jobs_pb2.SubmitJobResponse(job=codec.job_to_proto(view), created=created)
                for view, created in submitted
            ]
        )

    async def GetJob(self, request: jobs_pb2.GetJobRequest, context: Any) -> Any:
        return codec.job_to_proto(await self.service.get(CALLER.get(), request.job_id))

    async def WatchJob(self, request: jobs_pb2.WatchJobRequest, context: Any) -> Any:
        async for view in self.service.watch(CALLER.get(), request.job_id):
            yield jobs_pb2.JobEvent(job=codec.job_to_proto(view))

    async def CancelJob(self, request: jobs_pb2.CancelJobRequest, context: Any) -> Any:
        view = await self.service.cancel(CALLER.get(), request.job_id, request.reason)
        return codec.job_to_proto(view)

    async def ListJobs(self, request: jobs_pb2.ListJobsRequest, context: Any) -> Any:
        limit = min(request.page_size or 50, 500)
        before = _page_token(request.page_token)
        rows = await self.service.list(
            CALLER.get(),
            device_id=request.device_id or None,
            states=codec.states_from_proto(list(request.states)),
            limit=limit,
            before_seq=before,
        )
        token = str(rows[-1][0]) if len(rows) == limit else ""
        return jobs_pb2.ListJobsResponse(
            jobs=[codec.job_to_proto(v) for _, v in rows], next_page_token=token
        )

    async def GetResult(self, request: jobs_pb2.GetResultRequest, context: Any) -> Any:
        return codec.result_to_proto(await self.service.result(CALLER.get(), request.job_id))

    async def OpenSession(self, request: jobs_pb2.OpenSessionRequest, context: Any) -> Any:
        session = await self.service.open_session(
            CALLER.get(), request.device_id, request.project, request.max_seconds
        )
        return codec.session_to_proto(session)

    async def GetSession(self, request: jobs_pb2.GetSessionRequest, context: Any) -> Any:
        return codec.session_to_proto(
            await self.service.get_session(CALLER.get(), request.session_id)
        )

    async def CloseSession(self, request: jobs_pb2.CloseSessionRequest, context: Any) -> Any:
        session = await self.service.close_session(CALLER.get(), request.session_id, request.reason)
        return codec.session_to_proto(session)

    async def ListSessions(self, request: jobs_pb2.ListSessionsRequest, context: Any) -> Any:
        sessions = await self.service.list_sessions(
            CALLER.get(), request.device_id, request.include_closed
        )
        return jobs_pb2.ListSessionsResponse(sessions=[codec.session_to_proto(s) for s in sessions])

    async def GetQuota(self, request: jobs_pb2.GetQuotaRequest, context: Any) -> Any:
        statuses = await self.service.quota(CALLER.get(), request.project)
        return jobs_pb2.GetQuotaResponse(quotas=[codec.quota_to_proto(q) for q in statuses])


def _page_token(token: str) -> int | None:
    if not token:
        return None
    if not token.isdigit():
        raise BrokerError(ErrorCode.INVALID_ARGUMENT, "page_token is not one this broker issued")
    return int(token)


class DeviceServicer(devices_pb2_grpc.DeviceServiceServicer):
    def __init__(self, directory: DeviceDirectory) -> None:
        self.directory = directory

    async def ListDevices(self, request: devices_pb2.ListDevicesRequest, context: Any) -> Any:
        views = await self.directory.list(CALLER.get())
        return devices_pb2.ListDevicesResponse(devices=[codec.device_to_proto(v) for v in views])

    async def GetDevice(self, request: devices_pb2.GetDeviceRequest, context: Any) -> Any:
        return codec.device_to_proto(await self.directory.get(CALLER.get(), request.device_id))
