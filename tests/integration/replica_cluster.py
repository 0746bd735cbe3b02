"""Broker replicas as real processes on one PostgreSQL schema, for failover tests: each on
fixed ports so it can be killed and started again where its drivers and clients look for it."""

from __future__ import annotations

import dataclasses
import re
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from qtestbed.client import Client, Profile, QtestbedError
from qtestbed.testing import LocalFacility


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass(kw_only=True)
class Replica:
    name: str
    grpc_port: int = field(default_factory=free_port)
    link_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def link(self) -> str:
        return f"tcp://127.0.0.1:{self.link_port}"

    def start(self, facility: LocalFacility) -> None:
        self.process, _ = facility.launch_broker(
            grpc_port=self.grpc_port, link_port=self.link_port, name=self.name
        )

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def client_of(facility: LocalFacility, user: str, replica: Replica) -> Client:
    profile = Profile.load(facility.root / "users" / f"{user}.toml")
    return Client(dataclasses.replace(profile, broker=replica.grpc), timeout=10.0)


_ATTESTED = re.compile(r"attested by (\S+) for")


def attestations(driver_log: Path) -> list[str]:
    """The broker endpoint of every affirming verdict the driver logged, in order."""
    return _ATTESTED.findall(driver_log.read_text(errors="replace"))


class Load:
    """Submits jobs through every replica in turn from a thread until stopped or `limit`
    jobs were acknowledged; keeps the ids of the acknowledged ones (a refused or failed call
    - its replica was just killed - acknowledges nothing)."""

    def __init__(self, clients: list[Client], qasm: bytes, *, limit: int, every: float) -> None:
        self._clients = clients
        self._qasm = qasm
        self._limit = limit
        self._every = every
        self.acknowledged: list[str] = []
        self.refused = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        turn = 0
        while not self._stop.is_set() and len(self.acknowledged) < self._limit:
            client = self._clients[turn % len(self._clients)]
            turn += 1
            try:
                job = client.submit(self._qasm, device_id="sim-open", shots=20).job
            except QtestbedError:
                self.refused += 1
            else:
                self.acknowledged.append(job.job_id)
            time.sleep(self._every)


def completions(dsn: str, schema: str) -> dict[str, int]:
    """job id -> how many `job.completed` audit entries name it, read from the store."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            f'SELECT subject, COUNT(*) FROM "{schema}".audit_log'  # noqa: S608 - a test's own schema name
            " WHERE kind = 'job.completed' GROUP BY subject"
        ).fetchall()
    return {str(subject): int(count) for subject, count in rows}


def results(dsn: str, schema: str) -> dict[str, int]:
    """job id -> stored result rows."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            f'SELECT job_id, COUNT(*) FROM "{schema}".results GROUP BY job_id'  # noqa: S608
        ).fetchall()
    return {str(job_id): int(count) for job_id, count in rows}


def requeue_causes(dsn: str, schema: str) -> dict[str, int]:
    """cause -> how many `job.requeued` audit entries give it."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT detail::json->>'cause', COUNT(*) FROM \"{schema}\".audit_log"  # noqa: S608
            " WHERE kind = 'job.requeued' GROUP BY 1"
        ).fetchall()
    return {str(cause): int(count) for cause, count in rows}
