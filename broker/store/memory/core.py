"""What every part of the memory store shares: opening, transactions, group commit and the
audit chain, so every write of every kind links its audit event by the same code, inside the
same transaction as the change it records."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

from broker.audit.chain import GENESIS_HASH, chain_hash
from broker.audit.model import AuditEntry, AuditEvent
from broker.store.base import StoreError
from broker.store.memory.database import AuditRow, MemoryDatabase

_SCHEMA = "schema"


def to_json(doc: Mapping[str, Any]) -> str:
    """Sorted compact JSON, as the SQL stores keep documents; TypeError for what JSON cannot
    hold, raised inside the transaction so the write it belongs to is undone."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def version_allows(stored: int | None, expected: int | None) -> bool:
    """Compare-and-set: an insert (expected None) needs no stored row, an update needs the
    stored version to be `expected`."""
    return stored is None if expected is None else stored == expected


def check_version_moves(what: str, version: int, expected: int | None) -> None:
    """An update that keeps the version would let a second writer's compare-and-set win too."""
    if expected is not None and version <= expected:
        raise ValueError(f"{what}: version {version} must exceed the expected {expected}")


def entry_from_row(row: AuditRow) -> AuditEntry:
    event = AuditEvent(
        kind=row.kind,
        actor=row.actor,
        subject=row.subject,
        at=row.at,
        detail=json.loads(row.detail),
    )
    return AuditEntry(seq=row.seq, event=event, prev_hash=row.prev_hash, entry_hash=row.entry_hash)


class MemoryCore:
    """Opens on a `MemoryDatabase` (a new, private one by default) and runs every operation
    under the database's lock; the parts of `MemoryStore` build on `_write` and `_read`."""

    def __init__(self, database: MemoryDatabase | None = None) -> None:
        self.database = database if database is not None else MemoryDatabase()
        self._closed = False

    def _check(self, *, migrated: bool = True) -> None:
        if self._closed:
            raise StoreError("memory store is closed")
        if migrated and not self.database.meta.get(_SCHEMA):
            raise StoreError("memory store has no schema yet: call migrate() first")

    @contextlib.contextmanager
    def _write(self, *, migrated: bool = True) -> Iterator[MemoryDatabase]:
        """One write transaction: kept on normal exit, undone on any exception.

        Inside `batch()` it is a savepoint instead: undone alone if it fails, kept with the
        batch otherwise.
        """
        db = self.database
        with db.lock:
            self._check(migrated=migrated)
            mark = db.journal.mark()
            try:
                yield db
            except BaseException:
                db.journal.rollback(mark)
                raise
            if not db.batching:
                db.journal.forget()

    @contextlib.contextmanager
    def _read(self) -> Iterator[MemoryDatabase]:
        with self.database.lock:
            self._check()
            yield self.database

    def migrate(self) -> None:
        """Nothing to create, but a store refuses work until it is called, like the others."""
        with self._write(migrated=False) as db:
            db.meta.put(_SCHEMA, 1)

    def open_schema(self) -> None:
        """A memory database has one schema version, so starting on it is migrating it."""
        self.migrate()

    def close(self) -> None:
        """Any later call on this store raises StoreError; the database keeps its data."""
        self._closed = True

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Group commit: the writes inside share one transaction, each a savepoint that fails
        alone; an exception out of the batch undoes them all. Other stores on the database
        wait for the batch to end."""
        db = self.database
        with db.lock:
            self._check(migrated=False)
            if db.batching:
                yield
                return
            db.batching = True
            try:
                yield
            except BaseException:
                db.journal.rollback(0)
                raise
            else:
                db.journal.forget()
            finally:
                db.batching = False

    def _append(self, db: MemoryDatabase, event: AuditEvent) -> AuditEntry:
        """Link `event` after the current head, inside the caller's transaction."""
        detail = to_json(event.detail)
        seq = len(db.audit) + 1
        head = db.audit.get(seq - 1)
        prev_hash = head.entry_hash if head is not None else GENESIS_HASH
        stored = AuditEvent(
            kind=event.kind,
            actor=event.actor,
            subject=event.subject,
            at=float(event.at),  # as the SQL stores' float column gives it back
            detail=json.loads(detail),
        )
        row = AuditRow(
            seq=seq,
            kind=stored.kind,
            actor=stored.actor,
            subject=stored.subject,
            at=stored.at,
            detail=detail,
            prev_hash=prev_hash,
            entry_hash=chain_hash(prev_hash, seq, stored),
        )
        db.audit.put(seq, row)
        return entry_from_row(row)

    def append_audit(self, event: AuditEvent) -> AuditEntry:
        with self._write() as db:
            return self._append(db, event)

    def audit_entries(self, *, after_seq: int = 0, limit: int = 1000) -> list[AuditEntry]:
        if limit < 0:
            raise ValueError("limit must not be negative")
        with self._read() as db:
            # Entries are numbered 1..n without gaps: nothing ever removes one.
            first, last = max(after_seq, 0) + 1, min(len(db.audit), max(after_seq, 0) + limit)
            rows = [db.audit.get(seq) for seq in range(first, last + 1)]
        return [entry_from_row(row) for row in rows if row is not None]

    def audit_rows(self, *, after_seq: int = 0, limit: int = 1000) -> list[tuple[Any, ...]]:
        with self._read() as db:
            first, last = max(after_seq, 0) + 1, min(len(db.audit), max(after_seq, 0) + limit)
            found = [db.audit.get(seq) for seq in range(first, last + 1)]
        return [
            (r.seq, r.kind, r.actor, r.subject, r.at, r.detail, r.prev_hash, r.entry_hash)
            for r in found
            if r is not None
        ]
