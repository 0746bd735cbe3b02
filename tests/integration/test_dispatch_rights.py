"""Devices' dispatch rights on PostgreSQL (`broker.store.pg_rights`), between two processes'
worth of rights on one schema: a right is held by one at a time, the other sees who holds
which, one given back (no attested driver left) or lost with its session is taken by the other,
and the loser learns it has lost it at its next review."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import psycopg
import pytest

from broker.store.pg_rights import PgDispatchRights
from broker.store.postgres import PostgresStore, dispatch_lock_key
from tests.integration.conftest import fresh_schema

pytestmark = pytest.mark.postgres

DEVICES = ("sim-open", "sim-restricted")


def _all() -> tuple[str, ...]:
    return DEVICES


@pytest.fixture
def stores(pg_dsn: str) -> Iterator[tuple[PostgresStore, PostgresStore]]:
    # Keys are per schema: a fresh name keeps this test's rights apart from any other's.
    schema, _ = fresh_schema(pg_dsn)
    first, second = PostgresStore(pg_dsn, schema=schema), PostgresStore(pg_dsn, schema=schema)
    yield first, second
    first.close()
    second.close()


def _end_session_holding(dsn: str, store: PostgresStore, device_id: str) -> None:
    """Terminate the database session holding the device's right (a process's connection
    dropped, or the process died)."""
    key = dispatch_lock_key(store.schema, device_id) & 0xFFFFFFFFFFFFFFFF
    with psycopg.connect(dsn, autocommit=True) as conn:
        ended = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'"
            " AND granted AND objsubid = 1 AND classid::bigint = %s AND objid::bigint = %s",
            (key >> 32, key & 0xFFFFFFFF),
        ).fetchall()
    assert ended == [(True,)]


async def _claims_once_freed(rights: PgDispatchRights, device_id: str) -> None:
    """Claim until the server has ended the other session (it does so asynchronously)."""
    deadline = asyncio.get_running_loop().time() + 30
    while not await rights.claim(device_id):
        assert asyncio.get_running_loop().time() < deadline, f"{device_id}'s right never freed"
        await asyncio.sleep(0.05)


def test_one_holder_per_device_seen_by_the_other_and_taken_over(
    stores: tuple[PostgresStore, PostgresStore], pg_dsn: str
) -> None:
    async def scenario() -> None:
        a, b = (PgDispatchRights(store, _all) for store in stores)
        try:
            assert await a.claim("sim-open")
            assert await a.claim("sim-open")  # held: asked again, still held
            assert not await b.claim("sim-open")
            assert await b.claim("sim-restricted")
            for rights in (a, b):
                await rights.review(lambda device_id: True)
            assert (b.elsewhere("sim-open"), b.elsewhere("sim-restricted")) == (True, False)
            assert (a.elsewhere("sim-open"), a.elsewhere("sim-restricted")) == (False, True)

            # a's driver of sim-open left: the right goes back, b takes it.
            await a.review(lambda device_id: device_id != "sim-open")
            assert await b.claim("sim-open")
            await a.review(lambda device_id: True)
            assert a.elsewhere("sim-open")

            # b's session ends: a takes both; b, reviewing, knows it holds nothing.
            _end_session_holding(pg_dsn, stores[1], "sim-open")
            await _claims_once_freed(a, "sim-open")  # the server ends the session at once
            assert await a.claim("sim-restricted")
            await b.review(lambda device_id: True)  # reconnects: nothing held
            assert not await b.claim("sim-open")
            await b.review(lambda device_id: True)
            assert b.elsewhere("sim-open")
            assert b.elsewhere("sim-restricted")

            # a stops: its rights are free at once.
            await a.close()
            await _claims_once_freed(b, "sim-open")
        finally:
            await a.close()
            await b.close()

    asyncio.run(scenario())
