"""Running a broker as worker processes: the supervising side (`supervise`) and the worker's
side of the lifeline (`watch_lifeline`); `qtestbed broker` calls one or the other."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from broker.settings import BrokerSettings
from broker.workers.plan import WorkerPlan, plan_workers, reserve_port
from broker.workers.supervisor import Supervisor, WorkerCommand

# How long one worker may take to start (open the store, load queues, verify the audit log).
_START_TIMEOUT_S = 120.0


def worker_command(config: Path, store: str | None) -> WorkerCommand:
    """`qtestbed broker --worker K` on the same settings file, with the plan's addresses; the
    store flag is passed on when given (QTESTBED_* variables are inherited)."""

    def command(plan: WorkerPlan) -> Sequence[str]:
        cmd = [sys.executable, "-m", "qtestbed", "broker", "--config", str(config)]
        cmd += ["--worker", str(plan.index), "--listen", plan.listen]
        cmd += ["--link-listen", plan.link_listen, "--metrics-listen", plan.metrics_listen]
        cmd += ["--ready-file", str(plan.ready_file)]
        if plan.health_listen:
            cmd += ["--health-listen", plan.health_listen]
        if store:
            cmd += ["--store", store]
        return cmd

    return command


class Supervising:
    """The supervisor once running, for the SIGHUP handler set before it exists."""

    def __init__(self) -> None:
        self.supervisor: Supervisor | None = None

    def hang_up(self) -> None:
        if self.supervisor is not None:
            self.supervisor.hang_up()


async def supervise(
    settings: BrokerSettings,
    command: WorkerCommand,
    *,
    stop: asyncio.Event,
    on_ready: Callable[[dict[str, Any]], None],
    holder: Supervising,
) -> None:
    """Reserve the shared ports, start the workers, report where the broker listens, and run
    until `stop`; every worker has stopped when this returns."""
    held: list[socket.socket] = []
    try:
        sock, grpc_port = reserve_port(settings.listen)
        held.append(sock)
        health_port = 0
        if settings.health_listen:
            sock, health_port = reserve_port(settings.health_listen)
            held.append(sock)
        with tempfile.TemporaryDirectory(prefix="qtestbed-workers-") as folder:
            plans = plan_workers(
                settings, grpc_port=grpc_port, health_port=health_port, folder=Path(folder)
            )
            supervisor = holder.supervisor = Supervisor(plans, command)
            reports = await supervisor.start(_START_TIMEOUT_S)
            try:
                on_ready(_addresses(reports, supervisor.pids()))
                await stop.wait()
            finally:
                await supervisor.stop()
    finally:
        for sock in held:
            sock.close()


def _addresses(reports: list[dict[str, str]], pids: dict[int, int]) -> dict[str, Any]:
    """Where the broker listens (the shared ports, worker 0's link and /metrics), and each
    worker's pid and /metrics."""
    first = reports[0]
    keys = ("grpc", "link", "metrics", "health")
    info: dict[str, Any] = {k: first[k] for k in keys if k in first}
    info["workers"] = [
        {"index": index, "pid": pids[index], "metrics": report["metrics"]}
        for index, report in enumerate(reports)
    ]
    return info


def watch_lifeline(stop: asyncio.Event) -> None:
    """In a worker: set `stop` when standard input (the supervisor's pipe) closes, that is
    when the supervisor has gone, however it went. Read on the event loop (no thread, so no
    reader blocked in a buffered stream when the interpreter exits)."""
    loop = asyncio.get_running_loop()
    fd = sys.stdin.fileno()

    def readable() -> None:
        try:
            gone = not os.read(fd, 4096)
        except OSError:
            gone = True
        if gone:
            loop.remove_reader(fd)
            stop.set()

    loop.add_reader(fd, readable)
