"""A store the previous release wrote (its own code, from git history) upgrades with
`qtestbed migrate`: a broker of this release refuses it first, naming the command; after it every
job, result, audit entry and checkpoint reads back as it was, `qtestbed audit verify` passes, and
a broker of this release serves the old results with receipts that verify. SQLite and PostgreSQL.
"""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.store.schema import LATEST_VERSION
from qtestbed.testing import LocalFacility
from tests.e2e.console import qtestbed
from tests.e2e.previous_release import (
    PREVIOUS_SCHEMA,
    checkout,
    have_history,
    make_facility,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not have_history(), reason="needs the previous release in git history"),
]

_TABLES = ("jobs", "results", "audit_log", "audit_checkpoints", "schema_migrations")
Raw = Callable[[str], tuple[list[str], list[tuple[Any, ...]]]]
Snapshot = dict[str, tuple[list[str], list[tuple[Any, ...]]]]


def _sqlite_raw(path: Path) -> Raw:
    def raw(sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        with contextlib.closing(sqlite3.connect(path)) as conn:
            cur = conn.execute(sql)
            return [d[0] for d in cur.description], cur.fetchall()

    return raw


def _postgres_raw(dsn: str, schema: str) -> Raw:
    import psycopg

    def raw(sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'SET search_path TO "{schema}"')
            cur = conn.execute(sql)
            assert cur.description is not None
            return [d.name for d in cur.description], cur.fetchall()

    return raw


def _snapshot(raw: Raw, columns: Snapshot | None = None) -> Snapshot:
    """Every row of the kept tables; with `columns`, only the columns that snapshot had."""
    out: Snapshot = {}
    for table in _TABLES:
        names = ", ".join(columns[table][0]) if columns else "*"
        out[table] = raw(f"SELECT {names} FROM {table} ORDER BY 1")  # noqa: S608 - fixed names
    return out


@pytest.fixture
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Raw]]:
    """(store URL for the facility, raw reader): the facility's SQLite file or a fresh schema."""
    if request.param == "sqlite":
        yield "", _sqlite_raw(tmp_path / "fac" / "broker.db")
        return
    dsn: str = request.getfixturevalue("pg_dsn")
    schema = f"upgrade_{uuid.uuid4().hex[:12]}"
    yield f"{dsn}?schema={schema}", _postgres_raw(dsn, schema)
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.mark.parametrize(
    "store",
    ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
    indirect=True,
)
def test_a_previous_release_store_upgrades_keeping_everything(
    store: tuple[str, Raw], tmp_path: Path
) -> None:
    url, raw = store
    root = tmp_path / "fac"
    ran = make_facility(checkout(tmp_path / "previous"), root, url)
    before = _snapshot(raw)
    assert max(row[0] for row in before["schema_migrations"][1]) == PREVIOUS_SCHEMA
    assert len(before["results"][1]) == len(ran) == 3
    assert len(before["jobs"][1]) == 4
    assert before["audit_checkpoints"][1]
    env = {"QTESTBED_STORE": url} if url else {}
    config = str(root / "broker.toml")

    refused = qtestbed("broker", "--config", config, "--listen", "127.0.0.1:0", env=env)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"version {PREVIOUS_SCHEMA}" in refused.stderr
    assert "qtestbed migrate --config" in refused.stderr
    check = qtestbed("migrate", "--config", config, "--check", env=env)
    assert check.returncode == 1, check.stdout + check.stderr
    assert f"pending {LATEST_VERSION}:" in check.stdout
    assert _snapshot(raw) == before  # refusing and checking changed nothing

    done = qtestbed("migrate", "--config", config, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    applied = [line for line in done.stdout.splitlines() if line.startswith("applied ")]
    assert len(applied) == LATEST_VERSION - PREVIOUS_SCHEMA
    after = _snapshot(raw, before)
    versions = after.pop("schema_migrations")[1]
    assert [row[0] for row in versions] == list(range(1, LATEST_VERSION + 1))
    assert after == {t: v for t, v in before.items() if t != "schema_migrations"}
    verified = qtestbed("audit", "verify", "--config", config, env=env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    again = qtestbed("migrate", "--config", config, env=env)
    assert "applied: none" in again.stdout

    with LocalFacility(root, store=url or None) as fac:  # this release serves the old results
        fac.start_broker()
        alice = fac.client("alice")
        for job_id in ran:
            assert alice.verify_result(alice.result(job_id), alice.get_job(job_id)) == []
