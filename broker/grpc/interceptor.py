"""Authentication and authorization of every call, and the error table applied to every
call, in one interceptor: servicers see only authenticated callers (`CALLER`) and raise domain
errors. The caller's identity comes from the verified client certificate, never the request."""

from __future__ import annotations

import contextvars
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from broker.access.model import Principal
from broker.access.roles import authorize
from broker.errors import BrokerError, ErrorCode
from broker.grpc.status import abort

log = logging.getLogger(__name__)

CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("qtestbed_caller")

_OPEN_METHODS = ("/grpc.health.v1.Health/",)


def _caller_of(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    names = context.auth_context().get("x509_common_name") or []
    if len(names) != 1:
        raise BrokerError(
            ErrorCode.UNAUTHENTICATED,
            "a client certificate issued by the facility CA is required",
        )
    return bytes(names[0]).decode()


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
                await abort(context, exc)

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
                await abort(context, exc)

        return call
