"""`qtestbed probe`: health checks for container engines and Kubernetes, one line on stdout.

`probe broker` asks the broker's plaintext health port (`health_listen`) over grpc.health.v1;
`probe driver` reads the status file a driver rewrites every heartbeat (`status_file`). Exit
status 0 healthy, 1 not (the line says why), 2 the probe itself was asked wrongly.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from qtestbed.cli.errors import REFUSED, guarded


def register(sub: Any) -> None:
    probe = sub.add_parser("probe", help="health checks for container engines and Kubernetes")
    kinds = probe.add_subparsers(dest="probe_kind", required=True, metavar="KIND")
    p = kinds.add_parser("broker", help="ask the broker's health port (exit 0 SERVING)")
    p.add_argument("--address", default="127.0.0.1:8081", help="health_listen host:port")
    p.add_argument("--service", default="", help="one service, e.g. qtestbed.v1.JobService")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    p.set_defaults(handler=cmd_probe_broker)
    p = kinds.add_parser(
        "driver", help="read a driver's status file (exit 0 alive and hearing its broker)"
    )
    p.add_argument("--status-file", type=Path, required=True, help="the driver's status_file")
    p.add_argument(
        "--max-age",
        type=float,
        default=30.0,
        help="seconds since the driver last wrote the file and last heard its broker",
    )
    p.add_argument("--attested", action="store_true", help="also require a passing attestation")
    p.set_defaults(handler=cmd_probe_driver)


@guarded()
def cmd_probe_broker(args: argparse.Namespace) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    request = health_pb2.HealthCheckRequest(service=args.service)
    with grpc.insecure_channel(args.address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(request, timeout=args.timeout)
        except grpc.RpcError as exc:
            print(f"broker at {args.address} not healthy: {exc.code().name}: {exc.details()}")
            return REFUSED
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"broker at {args.address}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else REFUSED


@guarded()
def cmd_probe_driver(args: argparse.Namespace) -> int:
    problem = _driver_problem(args.status_file, args.max_age, args.attested)
    print(f"driver not healthy: {problem}" if problem else "driver healthy")
    return REFUSED if problem else 0


def _driver_problem(path: Path, max_age: float, attested: bool) -> str:
    """What is wrong with the driver that wrote `path`, or "" when nothing is."""
    try:
        doc = json.loads(path.read_text())
        written, heard = float(doc["written_at"]), float(doc["heard_at"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"no readable status file {path} ({exc})"
    now = time.time()
    if now - written > max_age:
        return f"status last written {now - written:.0f}s ago (the driver's loop has stalled)"
    if now - heard > max_age:
        return f"nothing heard from the broker for {now - heard:.0f}s"
    if attested and doc.get("attested") is not True:
        return "not attested"
    return ""
