"""A store that stops answering is the broker's problem, not the caller's: while the database
refuses the broker, every call says UNAVAILABLE with advice to retry (never INTERNAL, never the
database's own words), and the broker recovers by itself when the database takes it back.

The outage is real and touches no one else: the broker logs in to the shared PostgreSQL server
as a role of its own, which the test locks out (NOLOGIN, its sessions terminated) and lets back.
"""

from __future__ import annotations

import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest

from qtestbed.cli.demo import ghz_qasm2
from qtestbed.client import QtestbedError
from qtestbed.testing import LocalFacility, eventually
from tests.integration.support import state_name

pytestmark = pytest.mark.postgres

T = TypeVar("T")


class Outage:
    """A login role that owns one schema, and the switch that locks it out."""

    def __init__(self, admin_dsn: str) -> None:
        self.admin_dsn = admin_dsn
        suffix = uuid.uuid4().hex[:12]
        self.role = f"qtestbed_outage_{suffix}"
        self.schema = f"qtestbed_outage_{suffix}"
        self.database = urllib.parse.urlsplit(admin_dsn).path.lstrip("/")
        with self._admin() as conn:
            conn.execute(f'CREATE ROLE "{self.role}" LOGIN')
            conn.execute(f'CREATE SCHEMA "{self.schema}" AUTHORIZATION "{self.role}"')
            # The broker's migration says CREATE SCHEMA IF NOT EXISTS, which needs this.
            conn.execute(f'GRANT CREATE ON DATABASE "{self.database}" TO "{self.role}"')

    def _admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.admin_dsn, autocommit=True)

    def store_url(self) -> str:
        parts = urllib.parse.urlsplit(self.admin_dsn)
        netloc = f"{self.role}@{parts.hostname}:{parts.port or 5432}"
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=f"schema={self.schema}"))

    def begin(self) -> None:
        with self._admin() as conn:
            conn.execute(f'ALTER ROLE "{self.role}" NOLOGIN')
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (self.role,),
            )

    def end(self) -> None:
        with self._admin() as conn:
            conn.execute(f'ALTER ROLE "{self.role}" LOGIN')

    def drop(self) -> None:
        with self._admin() as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (self.role,),
            )
            conn.execute(f'REVOKE ALL ON DATABASE "{self.database}" FROM "{self.role}"')
            conn.execute(f'DROP ROLE IF EXISTS "{self.role}"')


@pytest.fixture
def outage(pg_dsn: str) -> Iterator[Outage]:
    made = Outage(pg_dsn)
    try:
        yield made
    finally:
        made.drop()


def test_calls_answer_unavailable_during_an_outage_and_work_again_after(
    tmp_path: Path, outage: Outage
) -> None:
    with LocalFacility(tmp_path / "facility", store=outage.store_url()) as facility:
        facility.start_broker()
        alice = facility.client("alice")
        queued = alice.submit(ghz_qasm2(2), device_id="sim-open", shots=10).job
        outage.begin()
        for attempt in (
            lambda: alice.get_job(queued.job_id),
            lambda: alice.submit(ghz_qasm2(2), device_id="sim-open", shots=10),
            lambda: alice.list_jobs(),
        ):
            with pytest.raises(QtestbedError) as refused:
                attempt()
            assert refused.value.code == "UNAVAILABLE"
            assert "try again in a few seconds" in refused.value.message
            assert "PostgreSQL" not in refused.value.message
            assert outage.role not in refused.value.message
        outage.end()
        back = eventually(
            lambda: _answers(lambda: alice.get_job(queued.job_id)),
            what="the broker to reach its database again",
        )
        assert state_name(back) == "QUEUED"
        assert [state_name(j) for j in alice.list_jobs()] == ["QUEUED"]


def _answers(call: Callable[[], T]) -> T | None:
    """The call's answer, or None while the broker still says UNAVAILABLE (anything else
    fails the test)."""
    try:
        return call()
    except QtestbedError as exc:
        if exc.code != "UNAVAILABLE":
            raise
        return None
