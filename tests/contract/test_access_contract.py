"""The `AccessStore` contract and the quota check in `insert_job`; every test runs against
SQLite, PostgreSQL and the memory store (see conftest.py)."""

from __future__ import annotations

import dataclasses
import threading
from typing import TYPE_CHECKING, Any

import pytest

from broker.access.model import AccessRecord, Quota, QuotaCheck, QuotaExceeded, RecordKind, Usage
from broker.audit.chain import verify_chain
from broker.audit.model import AuditEvent
from broker.jobs.model import JobState
from broker.store.base import BrokerStore
from tests.contract.test_store_contract import T0, make_job

if TYPE_CHECKING:
    from tests.contract.conftest import Backend, SqlBackend


def event(kind: str, subject: str) -> AuditEvent:
    return AuditEvent(kind=kind, actor="olivia", subject=subject, at=T0, detail={"k": subject})


def record(name: str, version: int = 1, **doc: Any) -> AccessRecord:
    return AccessRecord(
        kind=RecordKind.PRINCIPAL,
        name=name,
        doc={"tier": "open", "roles": ["researcher"], **doc},
        version=version,
        updated_at=T0 + version,
        updated_by="olivia",
    )


def test_records_round_trip_and_update_by_compare_and_set(store: BrokerStore) -> None:
    first = record("alice", training={"dual-use": T0 + 0.25})
    assert store.put_access(first, expected_version=None, event=event("created", "alice"))
    assert not store.put_access(first, expected_version=None, event=event("again", "alice"))
    assert store.access_records() == [first]

    second = record("alice", 2, affiliation="Example")
    assert store.put_access(second, expected_version=1, event=event("updated", "alice"))
    stale = record("alice", 2, affiliation="lost update")
    assert not store.put_access(stale, expected_version=1, event=event("stale", "alice"))
    with pytest.raises(ValueError, match="must exceed"):
        store.put_access(record("alice", 2), expected_version=2, event=event("x", "alice"))
    assert store.access_records(RecordKind.PRINCIPAL) == [second]
    assert store.access_records(RecordKind.PROJECT) == []

    assert not store.delete_access(
        RecordKind.PRINCIPAL, "alice", expected_version=1, event=event("stale", "alice")
    )
    assert store.delete_access(
        RecordKind.PRINCIPAL, "alice", expected_version=2, event=event("removed", "alice")
    )
    assert store.access_records() == []
    kinds = [e.event.kind for e in store.audit_entries()]
    assert kinds == ["created", "updated", "removed"]  # refused writes leave no entry
    assert verify_chain(store.audit_entries()) is None


def test_callers_cannot_change_a_stored_document(store: BrokerStore) -> None:
    first = record("alice")
    assert store.put_access(first, expected_version=None, event=event("created", "alice"))
    first.doc["roles"].append("operator")
    store.access_records()[0].doc["roles"].append("security")
    assert store.access_records()[0].doc == {"tier": "open", "roles": ["researcher"]}


def test_the_fingerprint_changes_with_every_write(store: BrokerStore) -> None:
    seen = {store.access_fingerprint()}
    store.put_access(record("a"), expected_version=None, event=event("c", "a"))
    seen.add(store.access_fingerprint())
    store.put_access(record("b"), expected_version=None, event=event("c", "b"))
    seen.add(store.access_fingerprint())
    store.put_access(record("a", 2), expected_version=1, event=event("u", "a"))
    seen.add(store.access_fingerprint())
    store.delete_access(RecordKind.PRINCIPAL, "b", expected_version=1, event=event("d", "b"))
    seen.add(store.access_fingerprint())
    assert len(seen) == 5


def _job(job_id: str, *, owner: str = "alice", project: str = "p", shots: int = 100) -> Any:
    return dataclasses.replace(make_job(job_id, owner=owner), project=project, shots=shots)


def test_usage_counts_active_jobs_and_shots_of_the_rolling_day(store: BrokerStore) -> None:
    since = T0 - 10
    old = dataclasses.replace(_job("old", shots=5000), created_at=since - 1, updated_at=since)
    for job in (old, _job("q1"), _job("q2", project="other"), _job("done", shots=7)):
        store.insert_job(job, event("job.submitted", job.job_id))
    done = store.get_job("done")
    assert done is not None
    finished = dataclasses.replace(done, state=JobState.COMPLETED, version=done.version + 1)
    assert store.save_job(finished, expected_version=done.version)
    withdrawn = store.get_job("q2")
    assert withdrawn is not None
    cancelled = dataclasses.replace(
        withdrawn, state=JobState.CANCELLED, version=withdrawn.version + 1
    )
    assert store.save_job(cancelled, expected_version=withdrawn.version)

    # Active: old and q1 (queued). Shots in the day: q1 and done; old is older, q2 never ran.
    assert store.job_usage(owner="alice", project=None, since=since) == Usage(
        active_jobs=2, shots_last_day=107
    )
    assert store.job_usage(owner=None, project="p", since=since) == Usage(
        active_jobs=2, shots_last_day=107
    )
    assert store.job_usage(owner=None, project="other", since=since) == Usage(
        active_jobs=0, shots_last_day=0
    )
    assert store.job_usage(owner="bob", project=None, since=since) == Usage(
        active_jobs=0, shots_last_day=0
    )


def _limits(jobs: int = 0, shots: int = 0, *, project_jobs: int = 0) -> QuotaCheck:
    return QuotaCheck(
        owner="alice",
        owner_quota=Quota(max_active_jobs=jobs, max_shots_per_day=shots),
        project="p",
        project_quota=Quota(max_active_jobs=project_jobs),
        since=T0 - 60,
    )


def test_insert_over_quota_writes_nothing(store: BrokerStore) -> None:
    quota = _limits(jobs=2, shots=250)
    store.insert_job(_job("a"), event("job.submitted", "a"), quota)
    store.insert_job(_job("b"), event("job.submitted", "b"), quota)
    with pytest.raises(QuotaExceeded) as caught:
        store.insert_job(_job("c", shots=1), event("job.submitted", "c"), quota)
    assert (caught.value.scope, caught.value.what, caught.value.used) == (
        "principal",
        "active jobs",
        2,
    )
    assert store.get_job("c") is None
    with pytest.raises(QuotaExceeded) as caught:
        store.insert_job(_job("d", shots=51), event("job.submitted", "d"), _limits(shots=250))
    assert (caught.value.what, caught.value.used) == ("shots per 24 hours", 200)
    store.insert_job(_job("e", shots=50), event("job.submitted", "e"), _limits(shots=250))
    with pytest.raises(QuotaExceeded) as caught:
        store.insert_job(
            _job("f", owner="bob"), event("job.submitted", "f"), _limits(project_jobs=3)
        )
    assert caught.value.scope == "project"
    assert [e.event.subject for e in store.audit_entries()] == ["a", "b", "e"]
    assert verify_chain(store.audit_entries()) is None


def test_a_quota_holds_between_two_connections(backend: Backend) -> None:
    """Two writers (two broker replicas on PostgreSQL) racing for the last slots."""
    stores = [backend.open(), backend.open()]
    stores[0].migrate()
    accepted: list[str] = []
    refused: list[str] = []
    errors: list[BaseException] = []
    quota = _limits(jobs=5)

    def submit_many(target: BrokerStore, name: str) -> None:
        try:
            for i in range(10):
                job_id = f"{name}-{i}"
                try:
                    target.insert_job(_job(job_id), event("job.submitted", job_id), quota)
                    accepted.append(job_id)
                except QuotaExceeded:
                    refused.append(job_id)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [
        threading.Thread(target=submit_many, args=(s, f"r{n}")) for n, s in enumerate(stores)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(accepted) == 5
    assert len(refused) == 15
    assert stores[1].job_usage(owner="alice", project=None, since=T0 - 60).active_jobs == 5


def test_a_batch_over_quota_is_not_stored_at_all(store: BrokerStore) -> None:
    quota = _limits(jobs=2)

    def batch(attempt: str, names: tuple[str, ...]) -> list[Any]:
        return [
            (
                dataclasses.replace(_job(f"{name}-{attempt}"), idempotency_key=f"key-{name}"),
                event("job.submitted", name),
                quota,
            )
            for name in names
        ]

    with pytest.raises(QuotaExceeded):
        store.insert_jobs(batch("1", ("a", "b", "c")))
    assert [store.get_job(f"{n}-1") for n in ("a", "b", "c")] == [None, None, None]
    assert store.audit_entries() == []
    stored = store.insert_jobs(batch("2", ("a", "b")))
    assert [(job.job_id, created) for job, created in stored] == [("a-2", True), ("b-2", True)]
    # A retried batch (new job ids, the same keys) returns the jobs already stored.
    again = store.insert_jobs(batch("3", ("a", "b")))
    assert [(job.job_id, created) for job, created in again] == [("a-2", False), ("b-2", False)]


def test_the_fingerprint_changes_with_a_direct_edit_that_keeps_the_version(
    sql_backend: SqlBackend,
) -> None:
    """Someone with direct database access changes a record's document and keeps its version
    and time: the replicas' poll must still see it (they reload and decide on what is stored)."""
    store = sql_backend.open()
    store.migrate()
    store.put_access(record("alice"), expected_version=None, event=event("c", "alice"))
    before = store.access_fingerprint()
    sql_backend.raw(
        "UPDATE access_records SET doc = ? WHERE name = ?",
        ('{"tier": "open", "roles": ["researcher", "operator"]}', "alice"),
    )
    [stored] = store.access_records()
    assert stored.version == 1  # the version and time are as they were...
    assert store.access_fingerprint() != before  # ...and the fingerprint moved all the same
    after = store.access_fingerprint()
    sql_backend.raw("DELETE FROM access_records WHERE name = ?", ("alice",))
    assert store.access_fingerprint() != after
