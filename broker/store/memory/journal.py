"""An undo log: how the memory store makes a failed write leave no trace.

Every change to a `Table` records the action that reverses it. A transaction remembers the
journal's length when it began (`mark`) and, if it fails, undoes back to there; a savepoint
inside a batch is just a later mark. Committing the outermost transaction forgets the log.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

Undo = Callable[[], None]


class Journal:
    """The undo actions of the open transaction's changes, oldest first."""

    def __init__(self) -> None:
        self._undo: list[Undo] = []

    def mark(self) -> int:
        """A point to roll back to."""
        return len(self._undo)

    def record(self, undo: Undo) -> None:
        self._undo.append(undo)

    def rollback(self, mark: int) -> None:
        """Undo every change made since `mark`, newest first."""
        while len(self._undo) > mark:
            self._undo.pop()()

    def forget(self) -> None:
        """Commit: the changes stay and can no longer be undone."""
        self._undo.clear()


class Table(Generic[K, V]):
    """A dict whose every change is journaled. Values should be immutable: the table hands
    out the stored objects themselves."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        self._rows: dict[K, V] = {}

    def __contains__(self, key: K) -> bool:
        return key in self._rows

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, key: K) -> V | None:
        return self._rows.get(key)

    def keys(self) -> list[K]:
        return list(self._rows)

    def values(self) -> list[V]:
        """The values in insertion order: an update keeps a key's place, but a rolled-back
        delete puts the key last, so readers that promise an order sort explicitly."""
        return list(self._rows.values())

    def items(self) -> list[tuple[K, V]]:
        return list(self._rows.items())

    def put(self, key: K, value: V) -> None:
        rows = self._rows
        if key in rows:
            old = rows[key]
            self._journal.record(lambda: rows.__setitem__(key, old))
        else:
            self._journal.record(lambda: rows.__delitem__(key))
        rows[key] = value

    def delete(self, key: K) -> None:
        """Remove `key` (KeyError if absent); a rollback puts it back."""
        rows = self._rows
        old = rows.pop(key)
        self._journal.record(lambda: rows.__setitem__(key, old))
