"""gRPC health on a plaintext port of its own, for probes that hold no client certificate: the
kubelet's `grpc` probe and a container engine's health check (`qtestbed probe broker`).

It serves `grpc.health.v1.Health` and nothing else, from the servicer the mutual-TLS server
reports into, so both answer alike; a caller learns only SERVING or NOT_SERVING, which the
port's existence already tells. It is off unless `health_listen` is set, and a handful of calls
at a time are admitted (the rest are RESOURCE_EXHAUSTED at once), so a flood on it costs the
broker little.
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2_grpc

# Probes call once every few seconds; more than this at once is not a probe.
MAX_CONCURRENT_PROBES = 4


class HealthPort:
    def __init__(self, servicer: health.aio.HealthServicer) -> None:
        self._servicer = servicer
        self._server: grpc.aio.Server | None = None

    async def start(self, listen: str) -> int:
        """Bind `listen` (host:port, port 0 picks one) and serve; the bound port."""
        server = grpc.aio.server(maximum_concurrent_rpcs=MAX_CONCURRENT_PROBES)
        health_pb2_grpc.add_HealthServicer_to_server(self._servicer, server)
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
