"""How fast a change made through one broker replica reaches another on PostgreSQL.

    QTESTBED_TEST_PG_DSN=postgresql://postgres@127.0.0.1:5432/test \\
        .venv/bin/python bench/bench_replica_events.py           # about 20 seconds
    ... bench/bench_replica_events.py --quick                   # a smoke run; numbers mean nothing

Two brokers embedded in this process (each its own event loop thread) on one fresh schema of
the database named by QTESTBED_TEST_PG_DSN (dropped afterwards), and olivia's and alice's
mutual-TLS channels. Measured, each from the moment the writing RPC returned (committed):
- access: from the start of olivia's PutPrincipal of alice's record through replica A until
  replica B's in-memory access snapshot holds the new version;
- queue: from the start of alice's SubmitJob through replica B until replica A's scheduler
  holds the job.
The write call alone is printed beside each (the other replica may see the change before the
writer's answer reaches the client).
Against them, in the same run: a bare NOTIFY from one psycopg connection until LISTEN on
another receives it (the transport's own floor), and the fallback poll interval that would
apply without notifications (`[timing] replica_poll_seconds`). Printed: medians and p90s, and
`RATIO access-seen/notify`, `RATIO queue-seen/notify`. Every loop stops at its count.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg

from broker.access.model import RecordKind
from broker.access.records import AccessRecords
from broker.app import Broker
from broker.embedded import EmbeddedBroker
from broker.jobs.scheduler import Scheduler
from broker.settings import TimingSettings
from qtestbed.cli.demo import ghz_qasm2
from qtestbed.client import Client, Profile
from qtestbed.testing import UNLIMITED_ADMISSION, LocalFacility
from qtestbed.v1 import access_pb2

POLL_EVERY_S = 0.0002  # how often the bench reads the other replica's state
GIVE_UP_S = 10.0


def _until(check: Callable[[], bool], began: float) -> float:
    """Seconds from `began` until `check()` holds, read every POLL_EVERY_S."""
    while not check():
        if time.perf_counter() - began > GIVE_UP_S:
            raise TimeoutError("the other replica never saw the change")
        time.sleep(POLL_EVERY_S)
    return time.perf_counter() - began


def _bare_notify(dsn: str, rounds: int) -> list[float]:
    channel = f"bench_{uuid.uuid4().hex[:12]}"
    with (
        psycopg.connect(dsn, autocommit=True) as sender,
        psycopg.connect(dsn, autocommit=True) as listener,
    ):
        listener.execute(f'LISTEN "{channel}"')
        times = []
        for _ in range(rounds):
            began = time.perf_counter()
            sender.execute("SELECT pg_notify(%s, 'x')", (channel,))
            for _notify in listener.notifies(timeout=GIVE_UP_S, stop_after=1):
                times.append(time.perf_counter() - began)
        return times


def _holds_version(records: AccessRecords, version: int) -> bool:
    return records.version(RecordKind.PRINCIPAL, "alice") >= version


def _deeper(scheduler: Scheduler, depth: int) -> bool:
    return scheduler.depth("sim-open") > depth


def _access_change(olivia_a: Client, b: Broker, rounds: int) -> tuple[list[float], list[float]]:
    """(write RPC alone, write RPC start until B holds it), per round."""
    assert b.components is not None
    records = b.components.registries.records
    calls, seen = [], []
    for i in range(rounds):
        got = olivia_a.call(
            olivia_a.access.GetPrincipal, access_pb2.GetPrincipalRequest(name="alice")
        )
        got.principal.affiliation = f"bench {i}"
        want = got.meta.version + 1
        began = time.perf_counter()
        olivia_a.call(
            olivia_a.access.PutPrincipal,
            access_pb2.PutPrincipalRequest(
                principal=got.principal, expected_version=got.meta.version
            ),
        )
        calls.append(time.perf_counter() - began)
        seen.append(_until(partial(_holds_version, records, want), began))
    return calls, seen


def _queue_change(alice_b: Client, a: Broker, rounds: int) -> tuple[list[float], list[float]]:
    assert a.components is not None
    scheduler = a.components.jobs.scheduler
    calls, seen = [], []
    for _ in range(rounds):
        depth = scheduler.depth("sim-open")
        began = time.perf_counter()
        alice_b.submit(ghz_qasm2(2), device_id="sim-open", shots=10)
        calls.append(time.perf_counter() - began)
        seen.append(_until(partial(_deeper, scheduler, depth), began))
    return calls, seen


def _show(name: str, times: list[float]) -> float:
    ordered = sorted(times)
    median = statistics.median(ordered)
    p90 = ordered[int(0.9 * (len(ordered) - 1))]
    print(f"{name:<34} n={len(times):<4} median {median * 1e3:8.3f} ms   p90 {p90 * 1e3:8.3f} ms")
    return median


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few rounds (a smoke run)")
    args = parser.parse_args()
    dsn = os.environ.get("QTESTBED_TEST_PG_DSN", "")
    if not dsn:
        print("set QTESTBED_TEST_PG_DSN to a PostgreSQL database this bench may use")
        return 2
    rounds = 3 if args.quick else 40
    schema = f"qtestbed_bench_{uuid.uuid4().hex[:12]}"
    joiner = "&" if "?" in dsn else "?"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            _run(Path(tmp), f"{dsn}{joiner}schema={schema}", dsn, rounds)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return 0


def _run(root: Path, store: str, dsn: str, rounds: int) -> None:
    with LocalFacility(root / "facility", store=store, limits=UNLIMITED_ADMISSION) as facility:
        facility.start_broker()
        assert facility.embedded is not None
        assert facility.embedded.broker is not None
        a = facility.embedded.broker
        second = EmbeddedBroker(facility.settings())
        address = second.start().grpc
        try:
            assert second.broker is not None
            alice = Profile.load(facility.root / "users" / "alice.toml")
            alice_b = Client(dataclasses.replace(alice, broker=address))
            notify = _show("bare NOTIFY -> LISTEN", _bare_notify(dsn, rounds))
            put_call, put_seen = _access_change(facility.client("olivia"), second.broker, rounds)
            _show("PutPrincipal via A (the call)", put_call)
            access = _show("  ... until B's snapshot has it", put_seen)
            submit_call, submit_seen = _queue_change(alice_b, a, rounds)
            _show("SubmitJob via B (the call)", submit_call)
            queue = _show("  ... until A's scheduler has it", submit_seen)
            poll = TimingSettings().replica_poll_seconds
            print(f"fallback poll interval (without notifications) {poll:.1f} s")
            print(f"RATIO access-seen/notify {access / notify:.1f}")
            print(f"RATIO queue-seen/notify {queue / notify:.1f}")
            alice_b.close()
        finally:
            second.stop()


if __name__ == "__main__":
    raise SystemExit(main())
