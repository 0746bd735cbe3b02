"""`audit_rows` on every store: the stored columns, undecoded, that `broker.audit.stored` turns
back into exactly the entries `audit_entries` returns (so verifiers read what the broker wrote)."""

from __future__ import annotations

from broker.audit.model import AuditEvent
from broker.audit.stored import entry_from_stored, iter_stored
from broker.store.base import BrokerStore


def test_raw_rows_decode_to_the_stored_entries(store: BrokerStore) -> None:
    for i in range(7):
        store.append_audit(
            AuditEvent(
                kind="job.submitted",
                actor="alice",
                subject=f"job-{i}",
                at=1_700_000_000.123456 + i,
                detail={"shots": i, "note": "ünïcode", "nested": {"a": [1, 2.5, None]}},
            )
        )
    entries = store.audit_entries()
    assert [entry_from_stored(row) for row in store.audit_rows()] == entries
    assert store.audit_rows(after_seq=5, limit=1)[0][0] == 6
    assert list(iter_stored(store, page=3)) == entries
