"""The helpers that `SqlStore` supplies to its mixins (registry, access): one transaction,
query and audit-append implementation, so every write of every kind links its audit event
into the same chain, in the same transaction, by the same code.
"""

# S608: only constant table and column names and `?` markers are interpolated.
# ruff: noqa: S608

from __future__ import annotations

import abc
import contextlib
from collections.abc import Sequence
from typing import Any

from broker.audit.model import AuditEntry, AuditEvent
from broker.store.cursor import Cursor


def columns(names: Sequence[str]) -> str:
    return ", ".join(names)


def by_id_of(select: str, ident: str, owner: str | None) -> tuple[str, tuple[str, ...]]:
    """`select` (ending in `WHERE <id column> = ?`) and its parameters, restricted to the rows
    of `owner` when one is given: the database, not Python, tells someone else's row from no
    row, so neither is fetched or decoded."""
    if owner is None:
        return select, (ident,)
    return f"{select} AND owner = ?", (ident, owner)


def insert_sql(table: str, names: Sequence[str], suffix: str = "") -> str:
    marks = ", ".join("?" * len(names))
    return f"INSERT INTO {table} ({columns(names)}) VALUES ({marks}){suffix}"


class SqlParts(abc.ABC):
    @abc.abstractmethod
    def _transaction(self) -> contextlib.AbstractContextManager[Cursor]:
        """One write transaction: committed on normal exit, rolled back on any exception."""

    @abc.abstractmethod
    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run one read statement and return its rows."""

    @abc.abstractmethod
    def _append(self, cur: Cursor, event: AuditEvent) -> AuditEntry:
        """Link `event` after the current audit head, inside the caller's transaction."""

    @abc.abstractmethod
    def _serialize(self, cur: Cursor, purpose: str) -> None:
        """Runs first in a write transaction: other writers for the same `purpose` wait for
        this transaction to end, so a read-then-write inside it cannot race them."""

    @abc.abstractmethod
    def _announce(self, cur: Cursor, topic: str) -> None:
        """Tell other broker replicas, when this transaction commits, that `topic` changed
        (`broker.store.changes` names the topics)."""
