"""Devices' dispatch rights (`broker.link.rights`) as PostgreSQL session advisory locks.

Held on a connection of their own, for as long as this process has an attested driver of the
device: PostgreSQL frees them when the process dies or its session ends, and the next process
with a driver of the device takes the right at its next dispatch pass. Each review (every tick)
reads which rights are held and by whom from `pg_locks` in one query: a right this process
believed it held but its session lost is dropped here too, and the devices dispatched by other
processes are what `elsewhere` answers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

import psycopg

from broker.store.postgres import PostgresStore, dispatch_lock_key

log = logging.getLogger(__name__)

# Every granted advisory lock with a 64-bit key (objsubid 1) in this database, and whether this
# session holds it; the key is (classid << 32) | objid.
_HELD = (
    "SELECT classid::bigint, objid::bigint, pid = pg_backend_pid() FROM pg_locks"
    " WHERE locktype = 'advisory' AND granted AND objsubid = 1"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


def _key(classid: int, objid: int) -> int:
    unsigned = (classid << 32) | objid
    return unsigned - (1 << 64) if unsigned >= 1 << 63 else unsigned


class PgDispatchRights:
    def __init__(self, store: PostgresStore, devices: Callable[[], Iterable[str]]) -> None:
        self._store = store
        self._devices = devices  # every device id this broker knows (the registry's)
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()  # one statement at a time on the connection
        self._held: set[str] = set()
        self._elsewhere: frozenset[str] = frozenset()

    async def claim(self, device_id: str) -> bool:
        if device_id in self._held:
            return True
        key = dispatch_lock_key(self._store.schema, device_id)
        row = await self._one("SELECT pg_try_advisory_lock(%s)", (key,))
        if row is None or not row[0]:
            return False
        self._held.add(device_id)
        log.info("holding the dispatch right of %s", device_id)
        return True

    async def review(self, keep: Callable[[str], bool]) -> None:
        for device_id in sorted(d for d in self._held if not keep(d)):
            key = dispatch_lock_key(self._store.schema, device_id)
            self._held.discard(device_id)
            await self._one("SELECT pg_advisory_unlock(%s)", (key,))
            log.info("gave back the dispatch right of %s", device_id)
        rows = await self._all(_HELD)
        if rows is None:
            return  # the connection is down: nothing held here; the next review retries
        by_key = {dispatch_lock_key(self._store.schema, d): d for d in self._devices()}
        mine: set[str] = set()
        theirs: set[str] = set()
        for classid, objid, own in rows:
            found = by_key.get(_key(int(classid), int(objid)))
            if found is not None:
                (mine if own else theirs).add(found)
        self._held &= mine  # a right the session lost is not held, whatever we thought
        self._elsewhere = frozenset(theirs)

    def elsewhere(self, device_id: str) -> bool:
        return device_id in self._elsewhere

    async def close(self) -> None:
        """Ends the session, and with it every right held here."""
        async with self._lock:
            self._held.clear()
            if self._conn is not None:
                await self._conn.close()
                self._conn = None

    async def _one(self, sql: str, params: tuple[object, ...]) -> tuple[Any, ...] | None:
        rows = await self._all(sql, params)
        return rows[0] if rows else None

    async def _all(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]] | None:
        """The rows, or None when the database cannot be reached (every right is then lost
        with the session; the connection is opened again on the next call)."""
        async with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._held.clear()
                    self._conn = await psycopg.AsyncConnection.connect(
                        self._store.dsn, autocommit=True, **self._store.connect_options
                    )
                cur = await self._conn.execute(sql, params)
                return await cur.fetchall()
            except (psycopg.Error, OSError) as exc:
                log.warning("dispatch rights: no answer from the store (%s)", type(exc).__name__)
                self._held.clear()
                if self._conn is not None:
                    await self._conn.close()
                    self._conn = None
                return None
