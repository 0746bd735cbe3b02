"""The embedded store: one SQLite file in WAL mode, one connection, one writer.

Threading: the connection is opened with `check_same_thread=False` because the broker creates
the store on one thread and then drives it from `StoreRunner`'s single worker thread. It is
never used by two threads at once; that is the caller's promise, not something this class locks.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

from broker.store import schema
from broker.store.base import StoreError
from broker.store.cursor import Cursor
from broker.store.sql_store import SqlStore

DEFAULT_BUSY_TIMEOUT_MS = 5000
STORE_MODE = 0o600
# SQLite's companions of the database file: it creates them with the database file's mode.
_COMPANIONS = ("-wal", "-shm", "-journal")

log = logging.getLogger(__name__)


def _owner_only(path: Path) -> None:
    """Create the database file owner-only (0600) before SQLite opens it, whatever the umask.

    The store holds circuits, results and principals' personal data. SQLite alone would create
    the file 0644 less the umask, and gives its -wal and -shm files the database file's mode, so
    creating the file 0600 first makes all three owner-only. A store file made by an older
    broker that others can read is narrowed (and said so): it is this process's own data file.
    """
    if str(path) == ":memory:":
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, STORE_MODE)
    except OSError:
        return  # sqlite3.connect names the problem
    os.close(fd)
    for file in (path, *(path.with_name(path.name + c) for c in _COMPANIONS)):
        _narrow(file)


def _narrow(file: Path) -> None:
    try:
        mode = file.stat().st_mode & 0o777
    except FileNotFoundError:
        return
    if not mode & 0o077:
        return
    try:
        os.chmod(file, mode & 0o700)
    except OSError as exc:  # another user's file (an operator reading it): say so, go on
        log.warning("store file %s is readable by others (mode %#o): %s", file, mode, exc)
        return
    log.warning("store file %s was readable by others (mode %#o); made it 0600", file, mode)


class SqliteStore(SqlStore):
    """`Store` on a SQLite file; see `broker.store.sql_store` for the operations."""

    _dialect = schema.SQLITE
    # Text columns as bytes; `at` as stored when it is a number (a cast would round it).
    _RAW_AUDIT_SELECT = (
        "SELECT seq, CAST(kind AS BLOB), CAST(actor AS BLOB), CAST(subject AS BLOB), "
        "CASE WHEN typeof(at) IN ('real', 'integer') THEN at ELSE CAST(at AS BLOB) END, "
        "CAST(detail AS BLOB), CAST(prev_hash AS BLOB), CAST(entry_hash AS BLOB) FROM audit_log"
    )
    _db_errors = (sqlite3.Error,)
    replicated = False

    def __init__(self, path: Path, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> None:
        self.path = path
        _owner_only(path)
        try:
            # isolation_level=None: no implicit BEGINs; every write says BEGIN IMMEDIATE itself.
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(self._describe(exc)) from exc
        self._conn: sqlite3.Connection | None = conn
        try:
            with self._errors():
                self._configure(conn, busy_timeout_ms)
        except StoreError:
            self.close()
            raise

    @staticmethod
    def _configure(conn: sqlite3.Connection, busy_timeout_ms: int) -> None:
        # Another process (a second broker, the CLI) may hold the write lock for a moment.
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        # WAL lets readers proceed during a write and makes each commit one sequential append.
        conn.execute("PRAGMA journal_mode = WAL")
        # FULL syncs the WAL on every commit: an acknowledged job survives power loss, which
        # NORMAL (the usual WAL pairing) does not promise.
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")

    def _cursor(self) -> Cursor:
        if self._conn is None:
            raise StoreError(f"SQLite store {self.path} is closed")
        return self._conn.cursor()

    def _describe(self, exc: Exception) -> str:
        return f"SQLite store {self.path}: {exc}"

    def _before_migrate(self, cur: Cursor) -> None:
        """Nothing to do: BEGIN IMMEDIATE already holds the file's only write lock."""

    def _lock_audit(self, cur: Cursor) -> None:
        """Nothing to do: BEGIN IMMEDIATE already holds the file's only write lock."""

    def _serialize(self, cur: Cursor, purpose: str) -> None:
        """Nothing to do: BEGIN IMMEDIATE already holds the file's only write lock."""

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
