"""Which addresses each worker process of a broker binds, decided before any starts.

Shared by every worker (the kernel spreads connections over them, SO_REUSEPORT): the gRPC port
and the plaintext health port. The supervisor fixes a port 0 to one concrete port first and
holds it (bound, never listening: the kernel gives connections only to listening sockets), so
every worker binds the same one and no other process takes it while a worker restarts.

Owned by one worker: the driver link. A driver's session (CurveZMQ handshake, routing id,
attestation, leases) lives in the process that accepted it and ZeroMQ cannot share a port, so
worker 0 binds the configured link endpoint and holds every driver connection; it alone
dispatches, and the others tell it about the jobs they queue through the store's
notifications, as replicas do. The other workers bind an in-process endpoint no one outside
can reach.

Per worker: /metrics. Each worker counts what it did in its own registry; worker K serves it
on the configured port + K (or a free port where the configured one is 0), one scrape target
per worker, summed by the scraper.
"""

from __future__ import annotations

import dataclasses
import socket
from dataclasses import dataclass
from pathlib import Path

from broker.settings import BrokerSettings


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkerPlan:
    """What one worker process binds (host:port; link as a ZeroMQ endpoint)."""

    index: int
    listen: str
    link_listen: str
    metrics_listen: str
    health_listen: str  # "" serves none
    ready_file: Path


def plan_workers(
    settings: BrokerSettings, *, grpc_port: int, health_port: int, folder: Path
) -> list[WorkerPlan]:
    """The plan of each of `settings.server.workers` workers; `grpc_port` and `health_port`
    are the concrete shared ports (see `reserve_port`), their ready files in `folder`."""
    grpc_host, _ = split_address(settings.listen)
    metrics_host, metrics_port = split_address(settings.metrics_listen)
    health = ""
    if settings.health_listen:
        health = join_address(split_address(settings.health_listen)[0], health_port)
    return [
        WorkerPlan(
            index=index,
            listen=join_address(grpc_host, grpc_port),
            link_listen=settings.link_listen if index == 0 else f"inproc://qtestbed-worker-{index}",
            metrics_listen=join_address(metrics_host, metrics_port + index if metrics_port else 0),
            health_listen=health,
            ready_file=folder / f"worker-{index}-ready.json",
        )
        for index in range(settings.server.workers)
    ]


def pinned(plan: WorkerPlan, report: dict[str, str]) -> WorkerPlan:
    """The plan a worker is restarted with: the link endpoint and /metrics port it bound the
    first time (where the configured port was 0), so drivers and the scraper find it again."""
    host, _ = split_address(plan.metrics_listen)
    metrics_port = int(report["metrics"].rsplit(":", 1)[1].split("/", 1)[0])
    link = report["link"] if plan.link_listen.startswith("tcp://") else plan.link_listen
    return dataclasses.replace(
        plan, link_listen=link, metrics_listen=join_address(host, metrics_port)
    )


def reserve_port(address: str) -> tuple[socket.socket, int]:
    """Bind `address` (host:port, port 0 picks one) with SO_REUSEPORT without listening: the
    workers bind beside it and serve; held, it keeps the port this broker's while they restart.
    The caller closes the socket when the last worker has stopped."""
    host, port = split_address(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    bound: int = sock.getsockname()[1]
    return sock, bound


def split_address(address: str) -> tuple[str, int]:
    """host:port or [v6]:port -> (host, port); a missing host is 127.0.0.1."""
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def join_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
