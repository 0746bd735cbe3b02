"""A cache of answers to questions that carry their own whole second (`Environment.now`).

A policy request holds the second it is asked in, so an answer cached for one second can only
be hit again within that second: kept longer, it is memory that nothing will ever read, and a
broker under steady load would grow until a size limit (some thousands of entries of a kilobyte
each) rather than hold what the current second asks. So only the newest second seen and the one
before it are kept (a request made just before a tick may be decided just after it); an older
second's entries go when a newer second's first answer is stored. The size limit stays, for many
distinct questions within one second: when it is reached, every entry goes at once, so no
question is answered more cheaply than another because of which ones were asked before it.
"""

from __future__ import annotations

from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

# The seconds kept: the newest and the one before it.
_SECONDS_KEPT = 2


class SecondCache(Generic[K, V]):
    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seconds: dict[int, dict[K, V]] = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def get(self, second: int, key: K) -> V | None:
        entries = self._seconds.get(second)
        return None if entries is None else entries.get(key)

    def put(self, second: int, key: K, value: V) -> None:
        newest = max(self._seconds, default=second)
        if second <= newest - _SECONDS_KEPT:
            return  # older than anything kept: it could only be asked again by a late caller
        if second > newest:
            self._forget_before(second - _SECONDS_KEPT + 1)
        if self._size >= self._limit:
            self._seconds.clear()
            self._size = 0
        entries = self._seconds.setdefault(second, {})
        if key not in entries:
            self._size += 1
        entries[key] = value

    def _forget_before(self, second: int) -> None:
        for old in [s for s in self._seconds if s < second]:
            self._size -= len(self._seconds.pop(old))
