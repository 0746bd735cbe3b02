"""Authentication and authorization of every call, and the error table applied to every
call, in one interceptor: servicers see only authenticated callers (`CALLER`) and raise domain
errors. The caller's identity comes from the verified client certificate, never the request."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from broker.access.call_limits import CallLimits
from broker.access.open_streams import CURRENT_STREAM, OpenStreams, StreamTicket
from broker.access.roles import authorize
from broker.errors import BrokerError, ErrorCode
from broker.grpc.identity import Caller, EdgeIdentity, auth_context_of
from broker.grpc.status import abort
from broker.metrics import BrokerMetrics

log = logging.getLogger(__name__)

CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("qtestbed_caller")

_OPEN_METHODS = ("/grpc.health.v1.Health/",)


class EdgeInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Authenticates every call and applies the error table, in one place for all methods;
    admits it within the call limits; ends a stream when a new call would be refused (its
    credential revoked, its principal, role or grant gone: see `broker.access.open_streams`)."""

    def __init__(
        self,
        identity: EdgeIdentity,
        streams: OpenStreams,
        limits: CallLimits,
        metrics: BrokerMetrics,
    ) -> None:
        self._identity = identity
        self._streams = streams
        self._limits = limits
        self._metrics = metrics

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

    async def _authenticate(
        self, method: str, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Caller:
        caller = await self._identity.caller(auth_context_of(context))
        try:
            authorize(method, caller.principal)
        except BrokerError:
            self._identity.refused_role(caller)
            raise
        CALLER.set(caller.principal.name)
        return caller

    def _wrap_unary(
        self, method: str, behaviour: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Any]:
        async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                caller = await self._authenticate(method, context)
                with self._limits.call(caller.principal.name):
                    return await behaviour(request, context)
            except (BrokerError, Exception) as exc:
                if isinstance(exc, grpc.aio.AbortError):
                    raise
                await abort(context, exc, self._metrics)

        return call

    def _wrap_stream(
        self, method: str, behaviour: Callable[..., AsyncIterator[Any]]
    ) -> Callable[..., Any]:
        async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                caller = await self._authenticate(method, context)
                with self._limits.call(caller.principal.name):
                    ticket = self._limits.open_stream(
                        caller.principal.name,
                        caller.serial,
                        self._identity.stream_check(caller, method),
                    )
                    CURRENT_STREAM.set(ticket)  # a service may add a check of its own
                    try:
                        async for item in _until_ended(behaviour(request, context), ticket):
                            yield item
                    finally:
                        self._streams.close(ticket)
            except (BrokerError, Exception) as exc:
                if isinstance(exc, grpc.aio.AbortError):
                    raise
                await abort(context, exc, self._metrics)

        return call


async def _until_ended(items: AsyncIterator[Any], ticket: StreamTicket) -> AsyncIterator[Any]:
    """The stream's items until it ends, or until an access change ends it (with the answer
    a new call would get: UNAUTHENTICATED when revoked, PERMISSION_DENIED when a role went)."""
    revoked = asyncio.ensure_future(ticket.ended.wait())
    following: asyncio.Future[Any] | None = None
    try:
        while True:
            following = asyncio.ensure_future(anext(items))
            done, _ = await asyncio.wait({following, revoked}, return_when=asyncio.FIRST_COMPLETED)
            if following not in done:
                following.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await following
                raise _ending_error(ticket)
            try:
                item = following.result()
            except StopAsyncIteration:
                return
            yield item
    finally:
        revoked.cancel()
        # A client that goes away cancels this while `items` is mid-step: stop that step first,
        # or closing `items` fails ("already running") and its cleanup (the watch
        # subscription) is left to the garbage collector.
        if following is not None and not following.done():
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await following
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()


def _ending_error(ticket: StreamTicket) -> BrokerError:
    why = ticket.why
    if why is None:  # `ended` is set only with a reason; fail closed all the same
        return BrokerError(ErrorCode.PERMISSION_DENIED, "this stream was ended by the broker")
    # A fresh error per stream: one raised error object must not be shared between tasks.
    return BrokerError(why.error.code, str(why.error), rule_id=why.error.rule_id)
