"""What only the memory store promises: its undo journal, shared and private databases, and
an access fingerprint that moves on every write (the contract suites cover the rest)."""

from __future__ import annotations

import pytest

from broker.access.model import AccessRecord, RecordKind
from broker.audit.model import AuditEvent
from broker.store import StoreError
from broker.store.memory import MemoryDatabase, MemoryStore
from broker.store.memory.journal import Journal, Table


def _event(subject: str) -> AuditEvent:
    return AuditEvent(kind="access.changed", actor="olivia", subject=subject, at=1.0)


def _record(name: str) -> AccessRecord:
    return AccessRecord(
        kind=RecordKind.PROJECT, name=name, doc={}, version=1, updated_at=1.0, updated_by="o"
    )


def test_rollback_to_a_mark_undoes_only_what_came_after_it() -> None:
    journal = Journal()
    table: Table[str, int] = Table(journal)
    table.put("kept", 1)
    table.put("changed", 1)
    journal.forget()  # committed: no longer undoable
    outer = journal.mark()
    table.put("changed", 2)
    inner = journal.mark()
    table.put("added", 3)
    table.delete("kept")
    table.put("changed", 4)
    journal.rollback(inner)
    assert dict(table.items()) == {"kept": 1, "changed": 2}
    journal.rollback(outer)
    assert dict(table.items()) == {"kept": 1, "changed": 1}
    journal.rollback(0)
    assert dict(table.items()) == {"kept": 1, "changed": 1}


def test_stores_share_a_database_only_when_given_one() -> None:
    database = MemoryDatabase()
    first, second, private = MemoryStore(database), MemoryStore(database), MemoryStore()
    first.migrate()
    first.append_audit(_event("p1"))
    assert [e.event.subject for e in second.audit_entries()] == ["p1"]
    with pytest.raises(StoreError, match="migrate"):
        private.audit_entries()
    first.close()
    with pytest.raises(StoreError, match="closed"):
        first.audit_entries()
    assert len(second.audit_entries()) == 1  # closing one store leaves the data to the others


def test_the_fingerprint_moves_even_when_counts_versions_and_times_come_back() -> None:
    store = MemoryStore()
    store.migrate()
    store.put_access(_record("b"), expected_version=None, event=_event("b"))
    before = store.access_fingerprint()
    store.delete_access(RecordKind.PROJECT, "b", expected_version=1, event=_event("b"))
    store.put_access(_record("c"), expected_version=None, event=_event("c"))
    # Same number of records, same versions, same latest time: only the change count differs.
    assert store.access_fingerprint() != before
    assert store.access_fingerprint()[0::2] == before[0::2]
