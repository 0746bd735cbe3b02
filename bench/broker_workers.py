"""bench_broker.py's PostgreSQL worker-process targets: the broker as `[server] workers = N`
on a fresh schema of the database QTESTBED_TEST_PG_DSN names, one schema per run (dropped
after), so no run inherits another's queue."""

from __future__ import annotations

import contextlib
import subprocess
import uuid
from collections.abc import Iterator

import psycopg

from bench.harness import Target
from qtestbed.testing import LocalFacility

SUBMIT_METHOD = "/qtestbed.v1.JobService/SubmitJob"


def target_name(workers: int) -> str:
    return f"pg-w{workers}"


def stop_broker(facility: LocalFacility, grace: float = 60.0) -> None:
    """Stop the facility's broker process (and with it, its workers), if one runs: SIGTERM,
    then SIGKILL after `grace` seconds."""
    proc = facility.broker_process
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@contextlib.contextmanager
def fresh_schema(dsn: str) -> Iterator[str]:
    """A store URL on a new schema of `dsn`'s database, dropped when done."""
    schema = f"qtestbed_bench_{uuid.uuid4().hex[:12]}"
    joiner = "&" if "?" in dsn else "?"
    try:
        yield f"{dsn}{joiner}schema={schema}"
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@contextlib.contextmanager
def workers_broker(facility: LocalFacility, dsn: str, workers: int) -> Iterator[Target]:
    """The facility's broker as `workers` worker processes on a fresh PostgreSQL schema; the
    facility is back on its own store, one process, afterwards."""
    stop_broker(facility)
    with fresh_schema(dsn) as store:
        facility.store = store
        facility.limits["server"] = {"workers": workers}
        try:
            addresses = facility.start_broker_process()
            assert facility.broker_process is not None
            yield Target(
                name=target_name(workers),
                address=addresses.grpc,
                method=SUBMIT_METHOD,
                pid=facility.broker_process.pid,  # the supervisor: its tree holds the workers
            )
        finally:
            stop_broker(facility)
            facility.store = None
            facility.limits["server"] = {"workers": 1}  # broker.toml is rewritten at each start
