"""One store contract, run against every implementation.

`backend` opens stores on a fresh database: a SQLite file in tmp_path, a unique PostgreSQL
schema dropped afterwards, or a `MemoryDatabase`. Each `open()` is a new store on that same
database, as a second connection (or a second broker replica) would be; `store` is one such
store, migrated.

`sql_backend` and `sql_store` are the same for the SQL implementations only, for the tests
that need `raw()`: SQL run behind the store's back, the way someone with direct database
access could tamper with it. A memory database has no such back door.
"""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from broker.store.base import BrokerStore
from broker.store.memory import MemoryDatabase, MemoryStore
from broker.store.sql_store import SqlStore
from broker.store.sqlite import SqliteStore


def _conforms(sql: SqlStore, memory: MemoryStore) -> tuple[BrokerStore, BrokerStore]:
    """Never called: mypy checks here that every implementation is a whole `BrokerStore`."""
    return sql, memory


class Backend:
    def __init__(self, name: str, opener: Callable[[], BrokerStore]) -> None:
        self.name = name
        self._opener = opener
        self._opened: list[BrokerStore] = []

    def open(self) -> BrokerStore:
        """A new store (own connection) on this backend's database; not migrated yet."""
        store = self._opener()
        self._opened.append(store)
        return store

    def close_all(self) -> None:
        for store in self._opened:
            store.close()


class SqlBackend(Backend):
    def __init__(
        self,
        name: str,
        opener: Callable[[], SqlStore],
        raw: Callable[[str, Sequence[Any]], list[Any]],
    ) -> None:
        super().__init__(name, opener)
        self._sql_opener = opener
        self._raw = raw

    def open(self) -> SqlStore:
        store = self._sql_opener()
        self._opened.append(store)
        return store

    def raw(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run `sql` (with `?` markers) behind the store's back; returns fetched rows."""
        return self._raw(sql, params)


def _sqlite_backend(path: Path) -> SqlBackend:
    def raw(sql: str, params: Sequence[Any]) -> list[Any]:
        # closing() closes; the inner `with conn` commits what the statement changed.
        with contextlib.closing(sqlite3.connect(path)) as conn, conn:
            return conn.execute(sql, params).fetchall()

    return SqlBackend("sqlite", lambda: SqliteStore(path), raw)


def _postgres_backend(dsn: str, schema: str) -> SqlBackend:
    import psycopg

    from broker.store.postgres import PostgresStore

    def raw(sql: str, params: Sequence[Any]) -> list[Any]:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'SET search_path TO "{schema}"')
            cur = conn.execute(sql.replace("?", "%s"), params)
            return cur.fetchall() if cur.description else []

    return SqlBackend("postgres", lambda: PostgresStore(dsn, schema=schema), raw)


def _drop_schema(dsn: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@contextlib.contextmanager
def _open_sql_backend(
    name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[SqlBackend]:
    if name == "sqlite":
        backend = _sqlite_backend(tmp_path / "store.db")
        try:
            yield backend
        finally:
            backend.close_all()
        return
    dsn: str = request.getfixturevalue("pg_dsn")
    schema = f"qtestbed_test_{uuid.uuid4().hex[:16]}"
    backend = _postgres_backend(dsn, schema)
    try:
        yield backend
    finally:
        backend.close_all()
        _drop_schema(dsn, schema)


_SQL_PARAMS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(params=[*_SQL_PARAMS, pytest.param("memory", id="memory")])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "memory":
        database = MemoryDatabase()
        memory = Backend("memory", lambda: MemoryStore(database))
        yield memory
        memory.close_all()
        return
    with _open_sql_backend(request.param, request, tmp_path) as sql:
        yield sql


@pytest.fixture(params=_SQL_PARAMS)
def sql_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlBackend]:
    with _open_sql_backend(request.param, request, tmp_path) as sql:
        yield sql


@pytest.fixture
def store(backend: Backend) -> BrokerStore:
    """A migrated store on a fresh database."""
    opened = backend.open()
    opened.migrate()
    return opened


@pytest.fixture
def sql_store(sql_backend: SqlBackend) -> SqlStore:
    """A migrated SQL store on a fresh database (for tests that also use `sql_backend.raw`)."""
    opened = sql_backend.open()
    opened.migrate()
    return opened
