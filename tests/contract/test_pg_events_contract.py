"""What a PostgreSQL store tells other replicas (broker/store/postgres.py): a notification per
changed topic when a write commits, none for one that rolls back or changes nothing, and a
replica's liveness as its lock."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from broker.audit.model import AuditEvent
from broker.store import changes
from broker.store.postgres import PostgresStore, replica_lock_key
from qtestbed.testing import eventually
from tests.contract.test_registry_contract import make_device

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_store(pg_dsn: str) -> Iterator[PostgresStore]:
    schema = f"qtestbed_test_{uuid.uuid4().hex[:16]}"
    store = PostgresStore(pg_dsn, schema=schema)
    store.migrate()
    try:
        yield store
    finally:
        store.close()
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def listener(pg_store: PostgresStore, pg_dsn: str) -> Iterator[psycopg.Connection[object]]:
    conn: psycopg.Connection[object] = psycopg.connect(pg_dsn, autocommit=True)
    conn.execute(f'LISTEN "{pg_store.channel}"')
    try:
        yield conn
    finally:
        conn.close()


def _heard(conn: psycopg.Connection[object]) -> list[str]:
    return [n.payload for n in conn.notifies(timeout=0.3)]


def _event(kind: str, subject: str) -> AuditEvent:
    return AuditEvent(kind=kind, actor="operator", subject=subject, at=1.0, detail={})


def test_a_committed_write_is_announced_once_per_topic(
    pg_store: PostgresStore, listener: psycopg.Connection[object]
) -> None:
    device = make_device("dev-a")
    assert pg_store.save_device(device, expected_version=None, event=_event("d", "dev-a"))
    assert _heard(listener) == [changes.DEVICES]
    # A compare-and-set that loses writes nothing, and says nothing.
    assert not pg_store.save_device(device, expected_version=None, event=_event("d", "dev-a"))
    assert _heard(listener) == []


def test_a_rolled_back_batch_announces_nothing(
    pg_store: PostgresStore, listener: psycopg.Connection[object]
) -> None:
    def failing_batch() -> None:
        with pg_store.batch():
            device = make_device("dev-b")
            pg_store.save_device(device, expected_version=None, event=_event("d", "dev-b"))
            raise RuntimeError("the batch fails after the write")

    with pytest.raises(RuntimeError):
        failing_batch()
    assert _heard(listener) == []


def test_a_replica_is_alive_while_its_lock_is_held(pg_store: PostgresStore, pg_dsn: str) -> None:
    assert not pg_store.replica_alive("r1")  # nobody holds it (and the check gave it back)
    assert not pg_store.replica_alive("r1")
    with psycopg.connect(pg_dsn, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (replica_lock_key(pg_store.schema, "r1"),))
        assert pg_store.replica_alive("r1")
        assert not pg_store.replica_alive("r2")
    # Its session ended: it is gone as soon as the server has closed that session.
    eventually(lambda: not pg_store.replica_alive("r1"), timeout=5, what="the lock to go")
