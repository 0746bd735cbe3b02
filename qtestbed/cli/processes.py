"""Commands that create a facility or run one of its processes: init, broker, driver."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from qtestbed.cli.errors import CommandError, guarded
from qtestbed.cli.runner import run_until_signalled


def register(sub: Any) -> None:
    p = sub.add_parser(
        "init",
        help="write a self-contained facility (CA, keys, configs) to DIR; the CA keys go to a "
        "folder of their own, to be taken offline",
    )
    p.add_argument("dir", type=Path, help="folder to create; must be empty or absent")
    p.add_argument("--grpc-port", type=int, default=50051, help="broker gRPC port (default 50051)")
    p.add_argument("--link-port", type=int, default=5555, help="driver link port (default 5555)")
    p.add_argument("--metrics-port", type=int, default=9464, help="metrics port (default 9464)")
    p.add_argument(
        "--broker-name",
        action="append",
        default=[],
        metavar="NAME",
        help="a DNS name or IP address clients and drivers reach the broker by, named in its "
        "certificate besides localhost and 127.0.0.1 (repeat for each; e.g. the Kubernetes "
        "Service qtestbed-broker.qtestbed.svc)",
    )
    p.add_argument(
        "--offline-ca",
        type=Path,
        help="folder for the CA private keys, outside DIR (default: DIR-offline-ca beside DIR); "
        "take it off the broker's machine: the broker refuses to start where it can read one",
    )
    p.set_defaults(handler=cmd_init)

    p = sub.add_parser("broker", help="run the broker")
    p.add_argument("--config", type=Path, required=True, help="broker settings TOML")
    p.add_argument("--listen", help="gRPC address host:port (port 0 picks a free one)")
    p.add_argument("--link-listen", help="driver link endpoint, e.g. tcp://127.0.0.1:0")
    p.add_argument(
        "--metrics-listen",
        help="address host:port of /metrics (HTTPS, mutual TLS, for the scraper role only)",
    )
    p.add_argument(
        "--health-listen",
        help="address host:port of a plaintext port serving gRPC health only, for probes "
        "without a client certificate (qtestbed probe broker, the kubelet); default none",
    )
    p.add_argument("--store", help="store URL: sqlite:///path.db or postgresql://...")
    p.add_argument("--ready-file", type=Path, help="write the bound addresses here as JSON")
    p.add_argument(
        "--worker",
        type=int,
        metavar="K",
        help="run as worker K of a broker with [server] workers > 1; its supervising "
        "`qtestbed broker` passes this, with each worker's addresses",
    )
    p.set_defaults(handler=cmd_broker)

    p = sub.add_parser(
        "driver",
        help="run a driver agent for one device; `driver check` runs the conformance battery "
        "against the backend its settings select, with a local broker it starts",
    )
    p.add_argument(
        "action",
        nargs="?",
        choices=("run", "check"),
        default="run",
        help="run (default) or check",
    )
    p.add_argument("--config", type=Path, required=True, help="driver settings TOML")
    p.add_argument("--json", action="store_true", help="check: print the report as JSON")
    p.add_argument(
        "--broker",
        help="override the broker link endpoint (tcp://host:port); several, comma-separated,"
        " to move to the next replica when one falls silent",
    )
    p.add_argument(
        "--stats",
        type=Path,
        help="on exit, write how busy the device was as JSON here (jobs, busy_seconds, "
        "span_seconds from the first job's start to the last one's end, busy_fraction)",
    )
    p.add_argument(
        "--status-file",
        type=Path,
        help="rewrite this JSON file every heartbeat, for `qtestbed probe driver`",
    )
    p.set_defaults(handler=cmd_driver)


def _logging(worker: int | None = None) -> None:
    # A worker names itself in every line: its supervisor and siblings write to the same log.
    who = "" if worker is None else f"worker {worker} pid {os.getpid()} "
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s %(levelname)s {who}%(name)s: %(message)s",
        stream=sys.stderr,
    )


@guarded()
def cmd_init(args: argparse.Namespace) -> int:
    from qtestbed.facility_init import init_facility
    from qtestbed.offline_ca import default_offline_ca

    offline = args.offline_ca or default_offline_ca(args.dir)
    try:
        root = init_facility(
            args.dir,
            grpc_port=args.grpc_port,
            link_port=args.link_port,
            metrics_port=args.metrics_port,
            offline_ca=offline,
            broker_names=args.broker_name,
        )
    except (FileExistsError, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    print(f"facility written to {root}")
    print(
        f"  CA keys: {offline} (ca.key, clients-ca.key, devices-ca.key, with their certificates)."
        " Take this folder offline now: the broker needs none of it and will not start where"
        " it can read a CA key. Issue credentials where it is kept:"
        f" qtestbed credential issue CSR --name NAME --ca-dir {offline} ..."
    )
    print(f"  broker:  qtestbed broker --config {root}/broker.toml")
    print(f"  drivers: qtestbed driver --config {root}/drivers/sim-open.toml (and sim-restricted)")
    print(
        f"  submit:  qtestbed --profile {root}/users/alice.toml submit ghz.qasm --device sim-open"
    )
    return 0


@guarded()
def cmd_broker(args: argparse.Namespace) -> int:
    from broker.app import Broker
    from broker.audit.signer import DamagedAuditLog
    from broker.settings import SettingsError, load_settings
    from broker.store import StoreError

    _logging(args.worker)
    overrides = {
        "listen": args.listen,
        "link_listen": args.link_listen,
        "metrics_listen": args.metrics_listen,
        "health_listen": args.health_listen,
        "store": args.store,
    }
    try:
        settings = load_settings(args.config, overrides)
        if settings.server.workers > 1 and args.worker is None:
            return _supervise(args, settings)
        broker = Broker(settings)
    except (SettingsError, ValueError, OSError) as exc:
        raise CommandError(f"broker cannot start: {exc}") from exc

    async def serve(stop: asyncio.Event) -> int:
        if args.worker is not None:
            from broker.workers.run import watch_lifeline

            watch_lifeline(stop)
        try:
            addresses = await broker.start()
        except (DamagedAuditLog, StoreError) as exc:
            raise CommandError(f"broker cannot start: {exc}") from None
        broker.watch_handshakes()
        info = {"grpc": addresses.grpc, "link": addresses.link, "metrics": addresses.metrics}
        if addresses.health:
            info["health"] = addresses.health
        if args.ready_file is not None:
            _write_atomically(args.ready_file, json.dumps(info))
        print(f"qtestbed broker ready {json.dumps(info)}", flush=True)
        await stop.wait()
        await broker.stop()
        return 0

    return run_until_signalled(serve, on_hangup=broker.reload_facility)


def _supervise(args: argparse.Namespace, settings: Any) -> int:
    """[server] workers > 1: this process supervises the workers (broker.workers)."""
    from broker.workers.run import Supervising, supervise, worker_command
    from broker.workers.supervisor import WorkerFailed

    holder = Supervising()

    def ready(info: dict[str, Any]) -> None:
        if args.ready_file is not None:
            _write_atomically(args.ready_file, json.dumps(info))
        print(f"qtestbed broker ready {json.dumps(info)}", flush=True)

    async def serve(stop: asyncio.Event) -> int:
        command = worker_command(args.config, args.store)
        try:
            await supervise(settings, command, stop=stop, on_ready=ready, holder=holder)
        except (WorkerFailed, OSError) as exc:
            raise CommandError(f"broker cannot start: {exc}") from exc
        return 0

    return run_until_signalled(serve, on_hangup=holder.hang_up)


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)  # readers never see half a file


@guarded()
def cmd_driver(args: argparse.Namespace) -> int:
    # Before Qiskit is imported: its Rust passes would otherwise take every core, competing
    # with the simulator and, on a shared host, with the broker.
    os.environ.setdefault("RAYON_NUM_THREADS", "1")
    if args.action == "check":
        from qtestbed.cli.driver_check import run_check

        return run_check(args)
    from attestation.keys import KeyFileError, load_private_key
    from drivers.agent import DeviceNotAccepted, DriverAgent
    from drivers.config import DriverConfigError, load_driver_config

    _logging()
    try:
        config = load_driver_config(args.config, broker=args.broker, status_file=args.status_file)
        agent = DriverAgent(config, load_private_key(config.device_key))
    except (DriverConfigError, KeyFileError, OSError, ValueError) as exc:
        raise CommandError(f"driver cannot start: {exc}") from exc

    async def serve(stop: asyncio.Event) -> int:
        try:
            await agent.run(stop)
        except DeviceNotAccepted as exc:
            raise CommandError(f"broker refused this device: {exc}") from exc
        finally:
            if args.stats is not None:
                _write_atomically(args.stats, json.dumps(agent.busy.report()))
        return 0

    return run_until_signalled(serve)
