"""The shared store: PostgreSQL through psycopg 3, for several broker replicas.

All tables live in one schema of their own (default `qtestbed`) so the broker can share a
database with other applications. Like `SqliteStore`, one instance holds one connection and is
driven by one thread at a time.
"""

from __future__ import annotations

import functools
import hashlib
import re
from typing import Any

import psycopg
from psycopg import conninfo

from broker.store import schema
from broker.store.base import StoreError
from broker.store.cursor import Cursor
from broker.store.sql_store import SqlStore

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
DEFAULT_CONNECT_TIMEOUT_S = 10


@functools.lru_cache(maxsize=256)
def _format_style(sql: str) -> str:
    # The shared SQL uses `?` and contains no literal `?` or `%`, so this swap is exact.
    return sql.replace("?", "%s")


class _FormatCursor:
    """Adapts a psycopg cursor to the `?` placeholders of the shared SQL."""

    def __init__(self, cur: psycopg.Cursor[Any]) -> None:
        self._cur = cur

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount

    def execute(self, sql: str, params: Any = (), /) -> object:
        return self._cur.execute(_format_style(sql), params)

    def fetchone(self) -> Any:
        return self._cur.fetchone()

    def fetchall(self) -> list[Any]:
        return self._cur.fetchall()


def _lock_key(purpose: str, schema_name: str) -> int:
    """A stable signed 64-bit advisory-lock key, distinct per schema sharing the database."""
    digest = hashlib.sha256(f"qtestbed:{purpose}:{schema_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def change_channel(schema_name: str) -> str:
    """A channel name within PostgreSQL's 63-byte identifier limit, distinct per schema."""
    return "qtestbed_" + hashlib.sha256(schema_name.encode()).hexdigest()[:24]


def replica_lock_key(schema_name: str, replica_id: str) -> int:
    return _lock_key(f"replica:{replica_id}", schema_name)


def dispatch_lock_key(schema_name: str, device_id: str) -> int:
    """The key of a device's dispatch right (`broker.store.pg_rights`)."""
    return _lock_key(f"dispatch:{device_id}", schema_name)


class PostgresStore(SqlStore):
    """`Store` on PostgreSQL; see `broker.store.sql_store` for the operations."""

    _dialect = schema.POSTGRES
    _db_errors = (psycopg.Error,)
    replicated = True

    def __init__(self, dsn: str, *, schema: str = "qtestbed") -> None:
        if not _SCHEMA_NAME.fullmatch(schema):
            raise ValueError(f"schema name {schema!r} must match {_SCHEMA_NAME.pattern}")
        self.schema = schema
        self._dsn = dsn
        try:
            params = conninfo.conninfo_to_dict(dsn)
        except psycopg.Error:
            # The parser's message may quote the DSN, password included.
            raise StoreError("invalid PostgreSQL DSN (not shown: it may hold a password)") from None
        self._password = str(params.get("password") or "")
        host = params.get("host") or params.get("hostaddr") or "local socket"
        self.where = f"{host}:{params.get('port') or 5432}/{params.get('dbname') or ''}"
        self._extra: dict[str, Any] = {}
        if "connect_timeout" not in params:
            self._extra["connect_timeout"] = DEFAULT_CONNECT_TIMEOUT_S
        self._closed = False
        self._conn = self._connect()

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(self._dsn, autocommit=True, **self._extra)
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot connect to PostgreSQL at {self.where}: {self._scrub(exc)}"
            ) from None
        try:
            conn.execute(f'SET search_path TO "{self.schema}"')
        except psycopg.Error as exc:
            conn.close()
            raise StoreError(self._describe(exc)) from None
        return conn

    def _scrub(self, exc: Exception) -> str:
        text = str(exc).strip()
        return text.replace(self._password, "***") if self._password else text

    def _describe(self, exc: Exception) -> str:
        return f"PostgreSQL at {self.where} (schema {self.schema}): {self._scrub(exc)}"

    def _cursor(self) -> Cursor:
        if self._closed:
            raise StoreError(f"PostgreSQL store at {self.where} is closed")
        if self._conn.closed:
            # The server went away (restart, failover). Whatever was in flight already failed
            # with StoreError; reconnect so the next call can succeed.
            self._conn = self._connect()
        return _FormatCursor(self._conn.cursor())

    def _before_migrate(self, cur: Cursor) -> None:
        # Replicas starting together would otherwise race on CREATE SCHEMA and the version row.
        cur.execute("SELECT pg_advisory_xact_lock(?)", (_lock_key("migrate", self.schema),))
        cur.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')

    def _lock_audit(self, cur: Cursor) -> None:
        # Held until commit: the next replica reads the head only after this entry is visible,
        # so the chain stays one line.
        cur.execute("SELECT pg_advisory_xact_lock(?)", (_lock_key("audit", self.schema),))

    def _serialize(self, cur: Cursor, purpose: str) -> None:
        # Held until commit or rollback; taken inside a write, after the audit lock that every
        # write takes first (`SqlStore._transaction` says why), so it cannot deadlock.
        cur.execute("SELECT pg_advisory_xact_lock(?)", (_lock_key(purpose, self.schema),))

    def _announce(self, cur: Cursor, topic: str) -> None:
        # Delivered when the transaction commits, and not at all if it rolls back; a topic
        # repeated within one transaction is delivered once.
        cur.execute("SELECT pg_notify(?, ?)", (self.channel, topic))

    @property
    def channel(self) -> str:
        """The NOTIFY channel of this schema (one per schema sharing the database)."""
        return change_channel(self.schema)

    @property
    def backend_pid(self) -> int:
        """The server process of this store's connection (its own notifications carry it);
        0 while it is closed (reconnected at the next call)."""
        try:
            return int(self._conn.info.backend_pid)
        except psycopg.Error:
            return 0

    @property
    def dsn(self) -> str:
        return self._dsn

    @property
    def connect_options(self) -> dict[str, Any]:
        return dict(self._extra)

    def replica_alive(self, replica_id: str) -> bool:
        """Whether the replica holds its liveness lock (`broker.store.pg_events` takes it for
        as long as that replica's listening session lasts). A replica that died lost it with
        its session, so the try below takes it; it is given back at once."""
        key = replica_lock_key(self.schema, replica_id)
        rows = self._query("SELECT pg_try_advisory_lock(?)", (key,))
        if not rows[0][0]:
            return True
        self._query("SELECT pg_advisory_unlock(?)", (key,))
        return False

    def close(self) -> None:
        self._closed = True
        self._conn.close()
