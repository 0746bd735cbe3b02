"""The jobs and results tables of a real facility's store, tampered with kind by kind: `qtestbed
audit verify` names the job and the audit entry of each, on SQLite and on PostgreSQL, and the
untouched store passes.

The store comes from a real broker with a real driver: alice's job cancelled while queued, then
two jobs completed with signed receipts. The broker is stopped (so its last checkpoint covers
everything) before each kind is applied to a fresh copy.
"""

# ruff: noqa: S608  (table and column names are this file's own constants; values are parameters)
from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from qtestbed.cli.demo import ghz_qasm2
from qtestbed.cli.main import main
from qtestbed.testing import LocalFacility
from tests.integration.support import db_path, wait_state
from tests.integration.tampering_jobs import KINDS, Expected, TamperKind


def seed_facility_jobs(facility: LocalFacility) -> None:
    """One cancelled and two completed jobs of alice, then the broker stopped."""
    facility.start_broker()
    alice = facility.client("alice")
    queued = alice.submit(ghz_qasm2(2), device_id="sim-open", shots=50).job
    alice.cancel(queued.job_id)
    facility.start_driver("sim-open")
    facility.wait_available(alice, "sim-open")
    for width, shots in ((3, 200), (4, 300)):
        job = alice.submit(ghz_qasm2(width), device_id="sim-open", shots=shots).job
        wait_state(alice, job.job_id, "COMPLETED")
    facility.stop()


def verify(
    facility: LocalFacility, store: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, dict[str, object]]:
    """`qtestbed audit verify --json` on the facility's settings with `store` in their place."""
    config = facility.root / f"verify-{uuid.uuid4().hex[:8]}.toml"
    text = (facility.root / "broker.toml").read_text()
    lines = [
        f"store = {json.dumps(store)}" if line.startswith("store =") else line
        for line in text.splitlines()
    ]
    config.write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    code = main(["audit", "verify", "--config", str(config), "--json"])
    return code, json.loads(capsys.readouterr().out)


def assert_named(verdict: dict[str, object], expected: Expected, kind: TamperKind) -> None:
    entry = f"audit seq {expected.seq}" if expected.seq is not None else "no audit entry"
    prefix = f"job {expected.job_id} ({entry}):"
    findings = verdict["findings"]
    problems = [str(f["message"]) for f in findings]  # type: ignore[attr-defined]
    assert any(p.startswith(prefix) and expected.phrase in p for p in problems), (
        f"{kind.name}: expected '{prefix} ...{expected.phrase}...' among {problems}"
    )


def test_every_job_tampering_is_named_on_sqlite(
    facility: LocalFacility, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seed_facility_jobs(facility)
    original = db_path(facility)

    def fresh_copy(name: str) -> str:
        target = tmp_path / f"{name}.db"
        with sqlite3.connect(original) as src, sqlite3.connect(target) as dst:
            src.backup(dst)
        return f"sqlite:{target}"

    code, verdict = verify(facility, fresh_copy("untouched"), capsys)
    assert (code, verdict["ok"]) == (0, True), verdict
    assert len(KINDS) >= 10
    for number, kind in enumerate(KINDS):
        url = fresh_copy(f"kind-{number}")
        expected = kind.expected(url)
        kind.mutate(url)
        code, verdict = verify(facility, url, capsys)
        assert code == 1, f"{kind.name} was not caught: {verdict}"
        assert verdict["ok"] is False
        assert_named(verdict, expected, kind)


@pytest.fixture
def pg_facility(tmp_path: Path, pg_dsn: str) -> Iterator[tuple[LocalFacility, str]]:
    schema = f"qtestbed_tj_{uuid.uuid4().hex[:12]}"
    joiner = "&" if "?" in pg_dsn else "?"
    with LocalFacility(tmp_path / "facility", store=f"{pg_dsn}{joiner}schema={schema}") as fac:
        yield fac, schema
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        for name in [
            r[0]
            for r in conn.execute(
                "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE %s",
                (f"{schema}%",),
            )
        ]:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def copy_pg_schema(dsn: str, source: str, target: str) -> None:
    """Every table of `source` with its rows into a new schema `target` (no foreign keys, so
    the copy can be edited in any order)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{target}"')
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = %s AND table_type = 'BASE TABLE'",
                (source,),
            )
        ]
        for table in tables:
            conn.execute(
                f'CREATE TABLE "{target}"."{table}" (LIKE "{source}"."{table}" INCLUDING ALL)'
            )
            conn.execute(
                f'INSERT INTO "{target}"."{table}" OVERRIDING SYSTEM VALUE '
                f'SELECT * FROM "{source}"."{table}"'
            )


@pytest.mark.postgres
def test_every_job_tampering_is_named_on_postgres(
    pg_facility: tuple[LocalFacility, str], pg_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    facility, schema = pg_facility
    seed_facility_jobs(facility)
    joiner = "&" if "?" in pg_dsn else "?"

    def fresh_copy(number: int) -> str:
        target = f"{schema}_{number}"
        copy_pg_schema(pg_dsn, schema, target)
        return f"{pg_dsn}{joiner}schema={target}"

    code, verdict = verify(facility, fresh_copy(99), capsys)
    assert (code, verdict["ok"]) == (0, True), verdict
    for number, kind in enumerate(KINDS):
        url = fresh_copy(number)
        expected = kind.expected(url)
        kind.mutate(url)
        code, verdict = verify(facility, url, capsys)
        assert code == 1, f"{kind.name} was not caught: {verdict}"
        assert verdict["ok"] is False
        assert_named(verdict, expected, kind)
