"""Hearing other broker replicas' committed changes: PostgreSQL LISTEN on the schema's channel.

One connection of its own per broker, on the event loop. It also holds this replica's
liveness lock (a session advisory lock keyed by the replica id) for as long as it lives:
survivors take over the leases of a replica whose lock is free (`PostgresStore.replica_alive`),
and PostgreSQL frees it the moment that replica's process dies and its session ends.

Notifications can be missed while the connection is down, so after every (re)connect the
listener reports a gap and the broker re-reads everything once; polling stays as the fallback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import psycopg

from broker.store.changes import Change, parse
from broker.store.postgres import PostgresStore, replica_lock_key

log = logging.getLogger(__name__)

# Waits between reconnect attempts grow to this many seconds.
_MAX_BACKOFF_S = 5.0


class ChangeListener:
    def __init__(
        self,
        store: PostgresStore,
        *,
        replica_id: str,
        on_change: Callable[[Change], None],
        on_gap: Callable[[], None],
    ) -> None:
        self._store = store
        self._replica_id = replica_id
        self._on_change = on_change
        self._on_gap = on_gap
        # True while connected and listening (and holding the liveness lock).
        self.listening = False
        self._connected = asyncio.Event()

    async def wait_listening(self) -> None:
        await self._connected.wait()

    async def run(self) -> None:
        backoff = 0.2
        while True:
            try:
                await self._session()
            except (psycopg.Error, OSError) as exc:
                # The message names the server, never the password (none is in it).
                log.warning("replica change listener lost its connection: %s", type(exc).__name__)
            if self._connected.is_set():
                backoff = 0.2  # it had been listening: a fresh failure, retry soon
            self.listening = False
            self._connected.clear()
            self._on_gap()  # fall back to polling until the listener is back
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF_S)

    async def _session(self) -> None:
        store = self._store
        conn = await psycopg.AsyncConnection.connect(
            store.dsn, autocommit=True, **store.connect_options
        )
        async with conn:
            key = replica_lock_key(store.schema, self._replica_id)
            await conn.execute("SELECT pg_advisory_lock(%s)", (key,))
            await conn.execute(f'LISTEN "{store.channel}"')
            self.listening = True
            self._connected.set()
            self._on_gap()  # what committed before LISTEN was not heard: read it once
            async for notify in conn.notifies():
                if notify.pid == store.backend_pid:
                    continue  # this replica's own write: it already knows
                change = parse(notify.payload)
                if change is not None:
                    self._on_change(change)
