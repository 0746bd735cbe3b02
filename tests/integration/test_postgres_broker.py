"""The same job path with the broker on PostgreSQL instead of SQLite."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from qtestbed.cli.demo import ghz_qasm2
from qtestbed.testing import LocalFacility
from tests.integration.support import state_name, wait_state

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_facility(tmp_path: Path, pg_dsn: str) -> Iterator[LocalFacility]:
    schema = f"qtestbed_it_{uuid.uuid4().hex[:12]}"
    joiner = "&" if "?" in pg_dsn else "?"
    with LocalFacility(tmp_path / "facility", store=f"{pg_dsn}{joiner}schema={schema}") as fac:
        yield fac
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_ghz_completes_on_postgres_and_survives_a_broker_restart(
    pg_facility: LocalFacility,
) -> None:
    pg_facility.start_broker()
    alice = pg_facility.client("alice")
    queued = alice.submit(ghz_qasm2(3), device_id="sim-open", shots=300).job
    assert pg_facility.embedded is not None
    pg_facility.embedded.stop()
    pg_facility.start_broker()
    alice = pg_facility.client("alice")
    assert state_name(alice.get_job(queued.job_id)) == "QUEUED"
    pg_facility.start_driver("sim-open")
    done = wait_state(alice, queued.job_id, "COMPLETED")
    result = alice.result(done.job_id)
    assert set(result.counts) <= {"000", "111"}
    assert alice.verify_result(result, done) == []
