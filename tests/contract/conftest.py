"""One store contract, run against every implementation.

`backend` opens stores on a fresh database (a SQLite file in tmp_path, or a unique PostgreSQL
schema dropped afterwards) and gives tests raw SQL access to it, the way someone with direct
database access could tamper with it.
"""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from broker.store.sql_store import SqlStore
from broker.store.sqlite import SqliteStore


@dataclass
class Backend:
    name: str
    _open: Callable[[], SqlStore]
    _raw: Callable[[str, Sequence[Any]], list[Any]]
    opened: list[SqlStore] = field(default_factory=list)

    def open(self) -> SqlStore:
        """A new store (own connection) on this backend's database; not migrated yet."""
        store = self._open()
        self.opened.append(store)
        return store

    def raw(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run `sql` (with `?` markers) behind the store's back; returns fetched rows."""
        return self._raw(sql, params)

    def close_all(self) -> None:
        for store in self.opened:
            store.close()


def _sqlite_backend(path: Path) -> Backend:
    def raw(sql: str, params: Sequence[Any]) -> list[Any]:
        # closing() closes; the inner `with conn` commits what the statement changed.
        with contextlib.closing(sqlite3.connect(path)) as conn, conn:
            return conn.execute(sql, params).fetchall()

    return Backend("sqlite", lambda: SqliteStore(path), raw)


def _postgres_backend(dsn: str, schema: str) -> Backend:
    import psycopg

    from broker.store.postgres import PostgresStore

    def raw(sql: str, params: Sequence[Any]) -> list[Any]:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'SET search_path TO "{schema}"')
            cur = conn.execute(sql.replace("?", "%s"), params)
            return cur.fetchall() if cur.description else []

    return Backend("postgres", lambda: PostgresStore(dsn, schema=schema), raw)


def _drop_schema(dsn: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        backend = _sqlite_backend(tmp_path / "store.db")
        yield backend
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


@pytest.fixture
def store(backend: Backend) -> SqlStore:
    """A migrated store on a fresh database."""
    opened = backend.open()
    opened.migrate()
    return opened
