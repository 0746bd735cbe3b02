"""A broker run as worker processes (`[server] workers = 2`) on one PostgreSQL schema: the
`qtestbed broker` process supervises two workers that share its gRPC port. Calls from several
connections are answered by both (each counts what it accepted on its own /metrics); a real
driver runs every acknowledged job exactly once; a worker killed with SIGKILL under load is
started again, with no acknowledged job lost; stopping the broker stops every worker, and so
does the supervisor's own death. On SQLite, more than one worker is refused at start."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qtestbed.cli.demo import ghz_qasm2
from qtestbed.client import Client, Profile
from qtestbed.testing import LocalFacility, eventually, scrape_metrics
from tests.integration.conftest import drop_schema, fresh_schema
from tests.integration.replica_cluster import Load
from tests.integration.test_replica_failover import (
    _all_complete_exactly_once,
    _quick_driver_config,
)

# Two brokers' worth of processes and a restart: about a minute on this shared 2-core machine.
pytestmark = pytest.mark.timeout(240)

# Fresh connections opened per round until both workers have accepted a submission: the
# kernel hashes each connection to a worker, so a round of 8 misses one with p = 1/128.
ROUND = 8
ROUNDS = 8


@pytest.fixture
def workers(tmp_path: Path, pg_dsn: str) -> Iterator[tuple[LocalFacility, str]]:
    schema, store = fresh_schema(pg_dsn)
    limits = {"server": {"workers": 2}}
    with LocalFacility(tmp_path / "facility", store=store, limits=limits) as facility:
        facility.start_broker_process()
        yield facility, schema
    drop_schema(pg_dsn, schema)


def _ready(facility: LocalFacility) -> dict[str, Any]:
    info: dict[str, Any] = json.loads((facility.root / "broker-ready.json").read_text())
    return info


def _accepted(facility: LocalFacility, metrics_url: str) -> int:
    """Jobs this worker queued, from its own /metrics."""
    users = facility.root / "users"
    text = scrape_metrics(
        metrics_url,
        ca=facility.root / "ca" / "ca.pem",
        cert=users / "prometheus.pem",
        key=users / "prometheus.key",
    )
    found = re.findall(r'qtestbed_jobs_total\{device="sim-open",state="QUEUED"\} (\S+)', text)
    return int(float(found[0])) if found else 0


def _client(facility: LocalFacility) -> Client:
    profile = Profile.load(facility.root / "users" / "alice.toml")
    assert facility.addresses is not None
    return Client(dataclasses.replace(profile, broker=facility.addresses.grpc), timeout=10.0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _started(facility: LocalFacility, index: int) -> list[int]:
    """The pids the supervisor logged starting for worker `index`, in order."""
    log = (facility.root / "broker.log").read_text(errors="replace")
    return [int(pid) for pid in re.findall(rf"worker {index} started, pid (\d+)", log)]


def _submit_until_both_accept(facility: LocalFacility, clients: list[Client]) -> list[str]:
    """Submit one job on each of several fresh connections, a round at a time, until each
    worker's /metrics counts at least one; the ids of every job acknowledged."""
    workers = _ready(facility)["workers"]
    acknowledged: list[str] = []
    for _ in range(ROUNDS):
        for _ in range(ROUND):
            client = _client(facility)
            clients.append(client)
            acknowledged.append(
                client.submit(ghz_qasm2(2), device_id="sim-open", shots=20).job.job_id
            )
        counts = [_accepted(facility, w["metrics"]) for w in workers]
        if all(counts):
            assert sum(counts) == len(acknowledged)
            return acknowledged
    raise AssertionError(f"one worker accepted no call on {len(acknowledged)} connections")


@pytest.mark.postgres
def test_two_workers_share_the_port_and_a_killed_one_is_restarted_losing_no_job(
    workers: tuple[LocalFacility, str], pg_dsn: str
) -> None:
    facility, schema = workers
    info = _ready(facility)
    assert [w["index"] for w in info["workers"]] == [0, 1]
    config = _quick_driver_config(facility)  # hears a silent link within 0.6 s
    facility.start_driver("sim-open", config=config, brokers=[info["link"]])
    clients: list[Client] = []
    try:
        facility.wait_available(_client_kept(facility, clients), "sim-open")
        acknowledged = _submit_until_both_accept(facility, clients)
        # Worker 0 holds the driver link and so the dispatch right: SIGKILL it under load.
        victim = info["workers"][0]["pid"]
        with Load(clients[:8], ghz_qasm2(2), limit=1000, every=0.02) as load:
            eventually(lambda: len(load.acknowledged) >= 20, timeout=30, what="load to run")
            os.kill(victim, signal.SIGKILL)
            restarted = eventually(
                lambda: next((p for p in _started(facility, 0) if p != victim), None),
                timeout=30,
                what="the supervisor to start worker 0 again",
            )
            _wait_ready_again(facility, restarted)
            before = len(load.acknowledged)
            eventually(
                lambda: len(load.acknowledged) >= before + 20,
                timeout=60,
                what="submissions after the restart",
            )
        assert not _alive(victim)
        assert facility.broker_process is not None
        assert facility.broker_process.poll() is None  # the supervisor carried on
        acknowledged += load.acknowledged
        # Every job acknowledged before, during and after the kill ran, once.
        _all_complete_exactly_once(clients, acknowledged, pg_dsn, schema)
        # One dispatcher: only worker 0 (the first, then the restarted one) ever held the
        # device's dispatch right; worker 1 accepted jobs and left them to it.
        assert set(_right_holders(facility)) == {victim, restarted}
    finally:
        for client in clients:
            client.close()
    # Stopping the broker stops every worker: none is left behind.
    pids = [restarted, info["workers"][1]["pid"]]
    facility.broker_process.send_signal(signal.SIGTERM)
    assert facility.broker_process.wait(60) == 0
    assert not [pid for pid in pids if _alive(pid)]


def _right_holders(facility: LocalFacility) -> list[int]:
    """The pid of each worker that logged taking the dispatch right of sim-open, in order."""
    log = (facility.root / "broker.log").read_text(errors="replace")
    taken = r"worker \d+ pid (\d+) broker.store.pg_rights: holding the dispatch right of sim-open"
    return [int(pid) for pid in re.findall(taken, log)]


def _wait_ready_again(facility: LocalFacility, pid: int) -> None:
    """Until the restarted worker `pid` logs that it listens (it names itself in each line)."""

    def listening() -> bool:
        log = (facility.root / "broker.log").read_text(errors="replace")
        return f"worker 0 pid {pid} broker.app: broker listening" in log

    eventually(listening, timeout=60, what=f"the restarted worker 0 (pid {pid}) to listen")


def _client_kept(facility: LocalFacility, clients: list[Client]) -> Client:
    client = _client(facility)
    clients.append(client)
    return client


@pytest.mark.postgres
def test_workers_stop_when_their_supervisor_is_killed(workers: tuple[LocalFacility, str]) -> None:
    facility, _ = workers
    pids = [w["pid"] for w in _ready(facility)["workers"]]
    assert facility.broker_process is not None
    facility.broker_process.send_signal(signal.SIGKILL)
    facility.broker_process.wait()
    eventually(
        lambda: not any(_alive(pid) for pid in pids),
        timeout=60,
        what="every worker to stop after its supervisor died",
    )


def test_more_than_one_worker_on_sqlite_is_refused_naming_the_setting(tmp_path: Path) -> None:
    workers = 2
    facility = LocalFacility(tmp_path / "facility")
    toml = facility.root / "broker.toml"
    toml.write_text(toml.read_text().replace("workers = 1", f"workers = {workers}"))
    done = subprocess.run(
        [sys.executable, "-m", "qtestbed", "broker", "--config", str(toml)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert f"[server] workers = {workers} needs a PostgreSQL store" in done.stderr
    assert "set workers = 1" in done.stderr
    assert "started" not in done.stderr  # refused before any worker ran
