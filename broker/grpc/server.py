"""The gRPC server: mutual TLS against the facility root, the edge interceptor on every call,
the services, and gRPC health reporting each of them SERVING once started."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from broker.grpc.interceptor import EdgeInterceptor
from qtestbed.v1 import (
    access_pb2_grpc,
    admin_pb2_grpc,
    credentials_pb2_grpc,
    devices_pb2_grpc,
    grants_pb2_grpc,
    jobs_pb2_grpc,
)

SERVICES = (
    "JobService",
    "DeviceService",
    "DeviceAdminService",
    "AuditService",
    "AccessAdminService",
    "CredentialService",
    "AccessRequestService",
)


@dataclass(frozen=True, kw_only=True, slots=True)
class Servicers:
    jobs: jobs_pb2_grpc.JobServiceServicer
    devices: devices_pb2_grpc.DeviceServiceServicer
    device_admin: admin_pb2_grpc.DeviceAdminServiceServicer
    audit: admin_pb2_grpc.AuditServiceServicer
    access_admin: access_pb2_grpc.AccessAdminServiceServicer
    credentials: credentials_pb2_grpc.CredentialServiceServicer
    access_requests: grants_pb2_grpc.AccessRequestServiceServicer


@dataclass(frozen=True, kw_only=True, slots=True)
class Tls:
    """The broker's key and certificate (PEM) and the root client certificates chain to."""

    key_pem: bytes
    cert_pem: bytes
    client_ca_pem: bytes


def _add(server: grpc.aio.Server, servicers: Servicers) -> None:
    jobs_pb2_grpc.add_JobServiceServicer_to_server(servicers.jobs, server)
    devices_pb2_grpc.add_DeviceServiceServicer_to_server(servicers.devices, server)
    admin_pb2_grpc.add_DeviceAdminServiceServicer_to_server(servicers.device_admin, server)
    admin_pb2_grpc.add_AuditServiceServicer_to_server(servicers.audit, server)
    access_pb2_grpc.add_AccessAdminServiceServicer_to_server(servicers.access_admin, server)
    credentials_pb2_grpc.add_CredentialServiceServicer_to_server(servicers.credentials, server)
    grants_pb2_grpc.add_AccessRequestServiceServicer_to_server(servicers.access_requests, server)


def reuse_port_option(shared: bool) -> tuple[tuple[str, int], ...]:
    """gRPC's SO_REUSEPORT switch, set only where worker processes share a port (left as
    gRPC's default otherwise)."""
    return (("grpc.so_reuseport", 1),) if shared else ()


async def start_server(
    listen: str,
    *,
    tls: Tls,
    servicers: Servicers,
    interceptor: EdgeInterceptor,
    max_message_bytes: int,
    health_servicer: health.aio.HealthServicer | None = None,
    shared_port: bool = False,
) -> tuple[grpc.aio.Server, int]:
    """Bind, start and report healthy (on `health_servicer`, which a plaintext health port may
    share: see `broker.grpc.health_port`); returns the server and the port it bound.
    `shared_port`: bind with SO_REUSEPORT, beside the other worker processes of this broker
    (`broker.workers`), so the kernel spreads connections over them."""
    options: Sequence[tuple[str, Any]] = (
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        *reuse_port_option(shared_port),
    )
    server = grpc.aio.server(interceptors=[interceptor], options=options)
    _add(server, servicers)
    health_servicer = health_servicer or health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    creds = grpc.ssl_server_credentials(
        [(tls.key_pem, tls.cert_pem)],
        root_certificates=tls.client_ca_pem,
        require_client_auth=True,
    )
    port = server.add_secure_port(listen, creds)
    await server.start()
    for service in ("", *(f"qtestbed.v1.{name}" for name in SERVICES)):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    return server, port
