"""An in-memory store: a second, complete implementation of the store protocols, for tests.

`open_store("memory:")` opens one too.
"""

from __future__ import annotations

from broker.store.memory.database import MemoryDatabase
from broker.store.memory.store import MemoryStore

__all__ = ["MemoryDatabase", "MemoryStore"]
