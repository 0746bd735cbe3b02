"""What only one implementation promises (SQLite durability, PostgreSQL connections), and the
store URLs that `open_store` accepts."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from broker.audit.chain import verify_chain
from broker.audit.model import AuditEvent
from broker.jobs.model import Circuit, Job, JobState
from broker.store import StoreError, open_store
from broker.store.memory import MemoryStore
from broker.store.sqlite import SqliteStore
from qtestbed.shared.circuits import CircuitFormat

if TYPE_CHECKING:
    from broker.store.postgres import PostgresStore

# Inserts one job, says so, then dies without closing anything: what a power cut looks like to
# the process (the disk-level half is synchronous=FULL, checked below).
_INSERT_THEN_DIE = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from broker.audit.model import AuditEvent
    from broker.jobs.model import Circuit, Job, JobState
    from qtestbed.shared.circuits import CircuitFormat
    from broker.store.sqlite import SqliteStore

    store = SqliteStore(Path(sys.argv[1]))
    store.migrate()
    circuit = Circuit(format=CircuitFormat.OPENQASM2, payload=b"OPENQASM 2.0;",
                      digest="cd" * 32, num_qubits=2, depth=3)
    job = Job(job_id="survivor", owner="alice", device_id="dev-a", circuit=circuit,
              shots=100, state=JobState.QUEUED, created_at=1.5, updated_at=1.5)
    store.insert_job(job, AuditEvent(kind="job.submitted", actor="alice",
                                     subject="survivor", at=1.5))
    print("ok", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def _job(job_id: str) -> Job:
    circuit = Circuit(
        format=CircuitFormat.OPENQASM3,
        payload=b"OPENQASM 3;",
        digest="ef" * 32,
        num_qubits=1,
        depth=1,
    )
    return Job(
        job_id=job_id,
        owner="alice",
        device_id="dev-a",
        circuit=circuit,
        shots=10,
        state=JobState.QUEUED,
        created_at=1.0,
        updated_at=1.0,
    )


def _submitted(job_id: str) -> AuditEvent:
    return AuditEvent(kind="job.submitted", actor="alice", subject=job_id, at=1.0)


def test_sqlite_acknowledged_job_survives_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "killed.db"
    proc = subprocess.run(
        [sys.executable, "-c", _INSERT_THEN_DIE, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.stdout == "ok\n", proc.stderr
    assert proc.returncode == -signal.SIGKILL
    # The commit sits in the WAL, never checkpointed: reopening must recover it from there.
    assert Path(f"{path}-wal").stat().st_size > 0

    store = SqliteStore(path)
    try:
        store.migrate()
        job = store.get_job("survivor")
        assert job is not None
        assert (job.state, job.shots, job.circuit.payload) == (
            JobState.QUEUED,
            100,
            b"OPENQASM 2.0;",
        )
        entries = store.audit_entries()
        assert [e.event.subject for e in entries] == ["survivor"]
        assert verify_chain(entries) is None
    finally:
        store.close()


def test_sqlite_connection_settings(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    try:
        cur = store._cursor()  # the settings are per connection, so ask the store's own
        settings = {}
        for pragma in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout"):
            cur.execute(f"PRAGMA {pragma}")
            settings[pragma] = cur.fetchone()[0]
        # synchronous 2 is FULL: the WAL is synced on every commit.
        assert settings == {
            "journal_mode": "wal",
            "synchronous": 2,
            "foreign_keys": 1,
            "busy_timeout": 5000,
        }
    finally:
        store.close()


def test_sqlite_unopenable_path_is_a_store_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "s.db"
    with pytest.raises(StoreError, match="no-such-dir"):
        SqliteStore(missing)


def test_postgres_unreachable_names_host_not_password() -> None:
    pytest.importorskip("psycopg")
    from broker.store.postgres import PostgresStore

    with pytest.raises(StoreError, match=r"127\.0\.0\.1:1/qdb") as info:
        PostgresStore("postgresql://broker:s3cret-pw@127.0.0.1:1/qdb?connect_timeout=3")
    assert "s3cret-pw" not in str(info.value)
    with pytest.raises(StoreError, match="invalid PostgreSQL DSN") as info:
        PostgresStore("host=x password=s3cret-pw =broken")
    assert "s3cret-pw" not in str(info.value)


def test_postgres_rejects_a_schema_name_needing_quotes() -> None:
    pytest.importorskip("psycopg")
    from broker.store.postgres import PostgresStore

    with pytest.raises(ValueError, match="schema name"):
        PostgresStore("postgresql://127.0.0.1:1/x", schema='evil"; DROP')


@pytest.fixture
def pg_stores(pg_dsn: str) -> Iterator[Callable[[], PostgresStore]]:
    """Opens PostgresStores sharing one fresh schema; closes them and drops it afterwards."""
    import psycopg

    from broker.store.postgres import PostgresStore

    schema = f"qtestbed_test_{uuid.uuid4().hex[:16]}"
    opened: list[PostgresStore] = []

    def open_one() -> PostgresStore:
        opened.append(PostgresStore(pg_dsn, schema=schema))
        return opened[-1]

    yield open_one
    for store in opened:
        store.close()
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.mark.postgres
def test_postgres_reconnects_after_the_server_drops_it(
    pg_dsn: str, pg_stores: Callable[[], PostgresStore]
) -> None:
    import psycopg

    store = pg_stores()
    store.migrate()
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (store._conn.info.backend_pid,))
    # The call in flight fails (its outcome is unknown to the caller) ...
    with pytest.raises(StoreError, match="PostgreSQL at"):
        store.get_job("j1")
    # ... and the next one runs on a new connection.
    assert store.insert_job(_job("j1"), _submitted("j1"))[1]
    assert store.get_job("j1") == _job("j1")


@pytest.mark.parametrize(
    ("form", "name"),
    [
        ("sqlite://{abs}/a.db", "a.db"),  # {abs} starts with "/": three slashes in all
        ("sqlite:///{abs}/b.db", "b.db"),  # SQLAlchemy's four-slash absolute form
        ("{abs}/c.sqlite3", "c.sqlite3"),
        ("{abs}/d.db", "d.db"),
    ],
)
def test_open_store_sqlite_forms(tmp_path: Path, form: str, name: str) -> None:
    store = open_store(form.format(abs=tmp_path))
    try:
        assert isinstance(store, SqliteStore)
        assert store.path == tmp_path / name
    finally:
        store.close()


def test_open_store_relative_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store("sqlite:rel.db")
    try:
        store.migrate()
        assert (tmp_path / "rel.db").exists()
    finally:
        store.close()


def test_open_store_postgres_forms() -> None:
    pytest.importorskip("psycopg")
    for scheme in ("postgresql", "postgres"):
        with pytest.raises(StoreError, match=r"cannot connect to PostgreSQL at 127\.0\.0\.1:1"):
            open_store(f"{scheme}://u:pw@127.0.0.1:1/x?connect_timeout=3")


def test_open_store_memory_opens_a_new_empty_database_each_time() -> None:
    first, second = open_store("memory:"), open_store("memory:")
    assert isinstance(first, MemoryStore)
    for store in (first, second):
        store.migrate()
    first.insert_job(_job("j1"), _submitted("j1"))
    assert first.get_job("j1") == _job("j1")
    assert second.get_job("j1") is None


@pytest.mark.parametrize(
    "url",
    [
        "mysql://u:s3cret@h/db",
        "sqlite:",
        "sqlite://host/x.db",
        "x.txt",
        "memory:named",
        "memory:x.db",  # not a SQLite file named "memory:x.db"
        ":memory:",
    ],
)
def test_open_store_rejects_other_forms(url: str) -> None:
    with pytest.raises(ValueError, match=r"accepted forms: sqlite:///.*, or memory: \(") as info:
        open_store(url)
    assert "s3cret" not in str(info.value)
