"""gRPC health on a plaintext port of its own, for probes that hold no client certificate: the
kubelet's `grpc` probe and a container engine's health check (`qtestbed probe broker`).

It serves `grpc.health.v1.Health` and nothing else, from the servicer the mutual-TLS server
reports into, so both answer alike; a caller learns only SERVING or NOT_SERVING, which the
port's existence already tells. It is off unless `health_listen` is set, and a handful of calls
at a time are admitted: the rest are refused at once with RESOURCE_EXHAUSTED, counted and
audited with the front door's refusals (reason `health_busy`), so a flood on it costs the broker
little and is seen.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from broker.grpc.server import reuse_port_option

# Probes call once every few seconds; more than this at once is not a probe.
MAX_CONCURRENT_PROBES = 4
BUSY = "health_busy"


class HealthPort:
    def __init__(self, servicer: health.aio.HealthServicer, refused: Callable[[str], None]) -> None:
        """`refused(reason)` counts and audits a call refused past the limit."""
        self._servicer = servicer
        self._limited = _LimitedHealth(servicer, refused)
        self._server: grpc.aio.Server | None = None

    async def start(self, listen: str, *, shared_port: bool = False) -> int:
        """Bind `listen` (host:port, port 0 picks one) and serve; the bound port. With
        `shared_port`, beside this broker's other worker processes (SO_REUSEPORT)."""
        server = grpc.aio.server(options=reuse_port_option(shared_port))
        health_pb2_grpc.add_HealthServicer_to_server(self._limited, server)
        port: int = server.add_insecure_port(listen)
        await server.start()
        self._server = server
        return port

    async def stop(self, grace: float) -> None:
        """Answer NOT_SERVING from now on (the mutual-TLS server too), then close the port."""
        await self._servicer.enter_graceful_shutdown()
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None


class _LimitedHealth:
    """The shared health servicer, at most MAX_CONCURRENT_PROBES calls at once (served
    in its place: the generated registration takes any object with its methods)."""

    def __init__(self, inner: health.aio.HealthServicer, refused: Callable[[str], None]) -> None:
        self._inner = inner
        self._refused = refused
        self._in_flight = 0

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        async with self._place(context):
            return await self._inner.Check(request, context)

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> None:
        async with self._place(context):
            await self._inner.Watch(request, context)

    @contextlib.asynccontextmanager
    async def _place(self, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        if self._in_flight >= MAX_CONCURRENT_PROBES:
            self._refused(BUSY)
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the health port answers at most {MAX_CONCURRENT_PROBES} calls at once; a "
                "probe calls once every few seconds: retry in 1 s",
            )
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1
