"""Dispatch decides on committed state, against a real broker, a real driver process and real
SQLite and PostgreSQL stores: a clearance change committed while the job's lease is being
written stops the job, which the driver never hears of.

The race is made certain, not likely: the test (never the product) installs a database
trigger that, when a job of alice's is written as DISPATCHED, expires alice's clearance in the
same transaction, as another replica's operator write would (a new version of the record,
bypassing this broker's in-memory access snapshot). The change is committed before the
dispatcher looks again, whatever the timing.
"""

# S608: the SQL here is the test's own constant trigger text and a schema name it generated.
# ruff: noqa: S608

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg
import pytest

from broker.embedded import EmbeddedBroker
from qtestbed.cli.demo import ghz_qasm2
from qtestbed.client import Client
from qtestbed.testing import LocalFacility
from tests.integration.support import (
    audit_entries,
    db_path,
    metric_value,
    scrape,
    state_name,
    wait_state,
)

EXPIRED = 1_577_836_800  # 2020-01-01
RULE = "researcher-dispatch/clearance"

_SQLITE_TRIGGER = f"""
CREATE TRIGGER test_expire_alice_during_lease_write
AFTER UPDATE OF state ON jobs
WHEN NEW.state = 'DISPATCHED' AND OLD.state = 'QUEUED' AND NEW.owner = 'alice'
BEGIN
    UPDATE access_records
       SET doc = json_set(doc, '$.clearance_expires_at', {EXPIRED}),
           version = version + 1,
           updated_at = NEW.updated_at,
           updated_by = 'olivia'
     WHERE kind = 'principal' AND name = 'alice';
END;
"""


def _postgres_trigger(schema: str) -> str:
    return f"""
CREATE FUNCTION "{schema}".test_expire_alice() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE "{schema}".access_records
       SET doc = jsonb_set(doc::jsonb, '{{clearance_expires_at}}', '{EXPIRED}')::text,
           version = version + 1,
           updated_at = NEW.updated_at,
           updated_by = 'olivia'
     WHERE kind = 'principal' AND name = 'alice';
    RETURN NEW;
END $$;
CREATE TRIGGER test_expire_alice_during_lease_write
AFTER UPDATE OF state ON "{schema}".jobs
FOR EACH ROW
WHEN (NEW.state = 'DISPATCHED' AND OLD.state = 'QUEUED' AND NEW.owner = 'alice')
EXECUTE FUNCTION "{schema}".test_expire_alice();
"""


def _driver_log(facility: LocalFacility) -> str:
    return "".join(p.read_text() for p in facility.root.glob("driver-sim-open-*.log"))


def _assert_denied_after_the_lease_write(
    facility: LocalFacility,
    alice: Client,
    bob: Client,
    job_id: str,
    audit: Callable[[], list[tuple[str, str, dict[str, Any]]]],
) -> None:
    """The job ended DENIED by the clearance rule, its written lease was never sent, the
    denial was counted and audited, and the driver (which was listening) never heard of it.
    `audit` reads the store's audit log as (kind, subject, detail), in order."""
    denied = wait_state(alice, job_id, "DENIED", "COMPLETED")
    assert state_name(denied) == "DENIED"
    assert denied.rule_id == RULE
    assert "expired on 2020-01-01" in denied.reason
    # The driver was listening: bob's job, submitted after, reaches it; alice's never did.
    later = bob.submit(ghz_qasm2(2), device_id="sim-open", shots=10).job
    wait_state(bob, later.job_id, "COMPLETED")
    driver_log = _driver_log(facility)
    assert f"for job {later.job_id}" in driver_log
    assert job_id not in driver_log
    text = scrape(facility)
    assert metric_value(text, "qtestbed_clearance_denials_total", rule=RULE, stage="dispatch") == 1
    mine = [(kind, detail) for kind, subject, detail in audit() if subject == job_id]
    assert [kind for kind, _ in mine] == ["job.submitted", "job.dispatched", "clearance.denied"]
    (_, dispatched), (_, denial) = mine[1], mine[2]
    assert (denial["stage"], denial["rule"]) == ("dispatch", RULE)
    assert denial["lease"] == dispatched["lease"]  # the lease written, then withdrawn
    assert "expired on 2020-01-01" in denial["reason"]


def _sqlite_audit(facility: LocalFacility) -> list[tuple[str, str, dict[str, Any]]]:
    return [(e.kind, e.subject, e.detail) for e in audit_entries(facility)]


def test_a_clearance_expired_during_the_lease_write_stops_the_job_on_sqlite(
    facility: LocalFacility,
) -> None:
    facility.start_broker_process()
    alice, bob = facility.client("alice"), facility.client("bob")
    job = alice.submit(ghz_qasm2(3), device_id="sim-open", shots=100).job
    assert state_name(job) == "QUEUED"  # no driver yet: the job waits
    with closing(sqlite3.connect(db_path(facility))) as db:
        db.executescript(_SQLITE_TRIGGER)
    facility.start_driver("sim-open")
    _assert_denied_after_the_lease_write(
        facility, alice, bob, job.job_id, lambda: _sqlite_audit(facility)
    )
    with closing(sqlite3.connect(db_path(facility))) as db:
        (doc,) = db.execute(
            "SELECT doc FROM access_records WHERE kind = 'principal' AND name = 'alice'"
        ).fetchone()
    assert json.loads(doc)["clearance_expires_at"] == EXPIRED  # the trigger did fire


@pytest.fixture
def pg_schema(tmp_path: Path, pg_dsn: str) -> Iterator[tuple[LocalFacility, str]]:
    schema = f"qtestbed_it_{uuid.uuid4().hex[:12]}"
    joiner = "&" if "?" in pg_dsn else "?"
    with LocalFacility(tmp_path / "facility", store=f"{pg_dsn}{joiner}schema={schema}") as fac:
        yield fac, schema
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _postgres_audit(pg_dsn: str, schema: str) -> list[tuple[str, str, dict[str, Any]]]:
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute(
            f'SELECT kind, subject, detail FROM "{schema}".audit_log ORDER BY seq'
        ).fetchall()
    return [(str(kind), str(subject), json.loads(detail)) for kind, subject, detail in rows]


@pytest.mark.postgres
def test_a_clearance_expired_during_the_lease_write_stops_the_job_on_postgres(
    pg_schema: tuple[LocalFacility, str], pg_dsn: str
) -> None:
    """Two replicas on one schema: the job is submitted through the second, dispatched by the
    first (the driver's), and the change is committed during the first one's lease write."""
    facility, schema = pg_schema
    facility.start_broker()
    second = EmbeddedBroker(facility.settings())
    second_address = second.start().grpc
    alice_b = facility.client("alice", broker=second_address)
    try:
        job = alice_b.submit(ghz_qasm2(3), device_id="sim-open", shots=100).job
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(_postgres_trigger(schema))
        facility.start_driver("sim-open")
        _assert_denied_after_the_lease_write(
            facility,
            alice_b,
            facility.client("bob"),
            job.job_id,
            lambda: _postgres_audit(pg_dsn, schema),
        )
    finally:
        alice_b.close()
        second.stop()
