"""`MemoryStore`: the whole `BrokerStore` in plain Python data structures."""

from __future__ import annotations

from broker.store.memory.access import MemoryAccess
from broker.store.memory.jobs import MemoryJobs
from broker.store.memory.queue import MemoryQueue
from broker.store.memory.registry import MemoryRegistry
from broker.store.memory.sessions import MemorySessions


class MemoryStore(MemoryJobs, MemoryQueue, MemoryRegistry, MemoryAccess, MemorySessions):
    """A `BrokerStore` kept in memory, for fast tests of the services that use a store.

    It keeps every promise of the store protocols, checked by the same contract suites as
    the SQLite and PostgreSQL stores: compare-and-set versions, idempotency keys, quotas
    counted atomically with the insert, one hash-chained audit log written in the same
    transaction as each change (and not at all when the change fails), group commit with
    savepoints, at most one open session per device. What it cannot keep is durability: the
    data lives as long as its `MemoryDatabase`.

    `MemoryStore()` opens a new, private database; `MemoryStore(database)` opens another
    store on an existing one, as a second connection would. Call `migrate()` first, as with
    the others. Stored values are immutable or copied on the way in and out, so nothing a
    caller holds can change what is stored.
    """

    # One process only: a second store on the same database is a test's stand-in for a
    # second connection, not a replica.
    replicated = False
