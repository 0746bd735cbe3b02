"""The `Store` contract; every test runs against SQLite, PostgreSQL and the memory store (see
conftest.py). The tests that reach into a database with SQL are in test_sql_store_contract.py."""

from __future__ import annotations

import dataclasses
import threading
from typing import TYPE_CHECKING, Any

import pytest

from broker.audit.chain import GENESIS_HASH, verify_chain
from broker.audit.model import AuditEvent
from broker.jobs.model import Circuit, IdempotencyKeyReused, Job, JobResult, JobState, Lease
from broker.store import StoreError
from broker.store.base import BrokerStore, Store
from qtestbed.shared.circuits import CircuitFormat

if TYPE_CHECKING:
    from tests.contract.conftest import Backend

T0 = 1_760_000_000.123456  # fractional epoch seconds must survive the round trip exactly


def make_job(
    job_id: str, *, owner: str = "alice", device: str = "dev-a", key: str | None = None
) -> Job:
    circuit = Circuit(
        format=CircuitFormat.QPY,
        payload=b"QISKIT\x00\xff\x10" + job_id.encode(),  # not valid UTF-8 on purpose
        digest="ab" * 32,
        num_qubits=5,
        depth=17,
    )
    return Job(
        job_id=job_id,
        owner=owner,
        device_id=device,
        circuit=circuit,
        shots=1024,
        state=JobState.QUEUED,
        created_at=T0,
        updated_at=T0,
        idempotency_key=key,
    )


def event(kind: str, subject: str, **detail: Any) -> AuditEvent:
    return AuditEvent(kind=kind, actor="alice", subject=subject, at=T0 + 0.5, detail=detail)


def submit(store: Store, job_id: str, **kwargs: Any) -> Job:
    job, created = store.insert_job(make_job(job_id, **kwargs), event("job.submitted", job_id))
    assert created
    return job


def lease_for(job: Job) -> Lease:
    return Lease(
        lease_id=f"lease-{job.job_id}-{job.attempts + 1}",
        device_id=job.device_id,
        expires_at=T0 + 30.25,
        dispatch_nonce=bytes(range(32)),
    )


def move(store: Store, job: Job, target: JobState, **kwargs: Any) -> Job:
    """Transition `job` through the domain and save it with compare-and-set."""
    if target is JobState.DISPATCHED:
        kwargs.setdefault("lease", lease_for(job))
    moved = job.transition(target, now=T0 + 1, **kwargs)
    assert store.save_job(moved, expected_version=job.version, event=event("job.moved", job.job_id))
    return moved


def result_for(job: Job) -> JobResult:
    return JobResult(
        job_id=job.job_id,
        device_id=job.device_id,
        counts={"00000": 600, "11111": 424},
        execution_seconds=0.75,
        receipt=b'{"payloadType":"x"}\x00',
        stored_at=T0 + 2,
    )


def audit_count(store: Store) -> int:
    return len(store.audit_entries(limit=10_000))


def test_every_job_field_round_trips(store: BrokerStore) -> None:
    full = dataclasses.replace(
        make_job("j-full", key="retry-1"),
        state=JobState.RUNNING,
        attempts=2,
        lease=Lease(
            lease_id="lease-7",
            device_id="dev-a",
            expires_at=T0 + 30.000001,
            dispatch_nonce=b"\x00\x01\xfe\xff" * 8,
        ),
        reason="picked by fair share",
        rule_id="rule.tier-2",
        dispatched_at=T0 + 1.1,
        started_at=T0 + 1.2,
        finished_at=T0 + 9.9,
        version=7,
        memory=True,
    )
    bare = make_job("j-bare")
    for job in (full, bare):
        assert store.insert_job(job, event("job.submitted", job.job_id)) == (job, True)
        assert store.get_job(job.job_id) == job
    assert store.get_job("j-missing") is None


def test_a_read_for_an_owner_answers_someone_elses_job_exactly_like_a_missing_one(
    store: BrokerStore,
) -> None:
    job = submit(store, "j1")
    assert store.get_job("j1", owner="alice") == job
    assert store.get_job("j1", owner="bob") is None
    assert store.get_job("j-missing", owner="bob") is None
    assert store.get_job("j1", owner=None) == job  # operators read any job


def test_transitions_round_trip_through_save(store: BrokerStore) -> None:
    job = submit(store, "j1")
    for target in (JobState.DISPATCHED, JobState.RUNNING, JobState.COMPLETED):
        job = move(store, job, target, reason=f"now {target.value}")
        assert store.get_job("j1") == job
    assert job.version == 4
    assert job.lease is None
    assert job.finished_at == T0 + 1


def test_idempotency_key_returns_existing_job_and_writes_nothing(store: BrokerStore) -> None:
    first = submit(store, "j1", key="k-1")
    entries_before = store.audit_entries()
    again, created = store.insert_job(make_job("j2", key="k-1"), event("job.submitted", "j2"))
    assert (again, created) == (first, False)
    assert store.get_job("j2") is None
    assert store.audit_entries() == entries_before
    assert [job.job_id for _, job in store.list_jobs()] == ["j1"]

    other, created = store.insert_job(
        make_job("j3", owner="bob", key="k-1"), event("job.submitted", "j3")
    )
    assert created
    assert store.get_job("j3") == other
    assert audit_count(store) == len(entries_before) + 1


def test_a_job_is_found_by_its_owner_and_idempotency_key(store: BrokerStore) -> None:
    first = submit(store, "j1", key="k-1")
    submit(store, "j2", owner="bob", key="k-1")
    submit(store, "j3")  # no key
    assert store.job_by_idempotency_key("alice", "k-1") == first
    assert store.job_by_idempotency_key("bob", "k-1") == store.get_job("j2")
    assert store.job_by_idempotency_key("alice", "k-2") is None
    assert store.job_by_idempotency_key("carol", "k-1") is None


def test_a_key_reused_for_another_request_refuses_the_whole_batch(store: BrokerStore) -> None:
    submit(store, "j1", key="k-1")
    entries_before = store.audit_entries()
    other_device = make_job("j3", key="k-1", device="dev-b")
    with pytest.raises(IdempotencyKeyReused) as reused:
        store.insert_jobs(
            [
                (make_job("j2", key="k-2"), event("job.submitted", "j2"), None),
                (other_device, event("job.submitted", "j3"), None),
            ]
        )
    assert (reused.value.key, reused.value.existing_job_id) == ("k-1", "j1")
    assert store.get_job("j2") is None
    assert store.audit_entries() == entries_before


def test_jobs_without_a_key_never_collide(store: BrokerStore) -> None:
    submit(store, "j1")
    submit(store, "j2")
    assert {job.job_id for _, job in store.list_jobs()} == {"j1", "j2"}


def test_stale_compare_and_set_writes_nothing(store: BrokerStore) -> None:
    queued = submit(store, "j1")
    running = move(store, move(store, queued, JobState.DISPATCHED), JobState.RUNNING)
    entries_before = store.audit_entries()

    # A late writer still holding the QUEUED copy tries to complete the job.
    stale = queued.transition(JobState.CANCELLED, now=T0 + 5)
    assert not store.save_job(stale, expected_version=queued.version, event=event("x", "j1"))
    late = dataclasses.replace(running, version=running.version + 1, state=JobState.COMPLETED)
    assert not store.save_job(
        late, expected_version=running.version - 1, event=event("x", "j1"), result=result_for(late)
    )
    assert store.get_job("j1") == running
    assert store.audit_entries() == entries_before
    assert store.get_result("j1") is None
    unknown = make_job("j-nope").transition(JobState.CANCELLED, now=T0)
    assert not store.save_job(unknown, expected_version=1)


def test_a_reused_job_id_is_refused_and_writes_nothing(store: BrokerStore) -> None:
    first = submit(store, "j1", key="k-1")
    entries = store.audit_entries()
    with pytest.raises(StoreError):
        store.insert_job(make_job("j1", key="k-2"), event("job.submitted", "j1"))
    with pytest.raises(StoreError):  # one bad job in a batch: none of it is stored
        store.insert_jobs(
            [
                (make_job("j2"), event("job.submitted", "j2"), None),
                (make_job("j1", owner="bob"), event("job.submitted", "j1"), None),
            ]
        )
    assert store.get_job("j1") == first
    assert store.get_job("j2") is None
    assert store.audit_entries() == entries


def test_a_save_keeps_idempotency_keys_unique(store: BrokerStore) -> None:
    submit(store, "j1", key="k-1")
    j2 = submit(store, "j2", key="k-2")
    entries = store.audit_entries()
    clash = dataclasses.replace(j2, idempotency_key="k-1", version=j2.version + 1)
    with pytest.raises(StoreError):
        store.save_job(clash, expected_version=j2.version, event=event("x", "j2"))
    assert store.get_job("j2") == j2
    assert store.audit_entries() == entries

    rekeyed = dataclasses.replace(j2, idempotency_key="k-3", version=j2.version + 1)
    assert store.save_job(rekeyed, expected_version=j2.version)
    assert store.insert_job(make_job("j3", key="k-3"), event("x", "j3")) == (rekeyed, False)
    assert store.insert_job(make_job("j4", key="k-2"), event("x", "j4"))[1]  # k-2 is free


def test_a_second_result_for_a_job_is_refused(store: BrokerStore) -> None:
    running = move(store, move(store, submit(store, "j1"), JobState.DISPATCHED), JobState.RUNNING)
    done = running.transition(JobState.COMPLETED, now=T0 + 3)
    assert store.save_job(done, expected_version=running.version, result=result_for(done))
    entries = store.audit_entries()
    again = dataclasses.replace(done, version=done.version + 1, reason="reported twice")
    other = dataclasses.replace(result_for(done), counts={"00000": 1024})
    with pytest.raises(StoreError):
        store.save_job(again, expected_version=done.version, event=event("x", "j1"), result=other)
    assert store.get_job("j1") == done
    assert store.get_result("j1") == result_for(done)
    assert store.audit_entries() == entries


def test_what_callers_hold_cannot_change_what_is_stored(store: BrokerStore) -> None:
    detail: dict[str, Any] = {"nested": {"ids": [1]}}
    store.append_audit(AuditEvent(kind="k", actor="a", subject="s", at=T0, detail=detail))
    detail["nested"]["ids"].append(2)
    store.audit_entries()[0].event.detail["nested"]["ids"].append(3)
    assert store.audit_entries()[0].event.detail == {"nested": {"ids": [1]}}
    assert verify_chain(store.audit_entries()) is None

    job = move(store, move(store, submit(store, "j1"), JobState.DISPATCHED), JobState.RUNNING)
    counts = {"00000": 1000, "11111": 24}
    done = job.transition(JobState.COMPLETED, now=T0 + 3)
    result = dataclasses.replace(result_for(done), counts=counts)
    assert store.save_job(done, expected_version=job.version, result=result)
    counts["00000"] = 0
    fetched = store.get_result("j1")
    assert fetched is not None
    assert isinstance(fetched.counts, dict)  # a plain dict, as JSON encoders expect
    fetched.counts["11111"] = 0
    stored = store.get_result("j1")
    assert stored is not None
    assert stored.counts == {"00000": 1000, "11111": 24}


def test_save_refuses_a_job_whose_version_did_not_move(store: BrokerStore) -> None:
    job = submit(store, "j1")
    with pytest.raises(ValueError, match="version"):
        store.save_job(dataclasses.replace(job, reason="x"), expected_version=job.version)


def test_queue_is_fifo_per_device(store: BrokerStore) -> None:
    for job_id, device in [("a1", "dev-a"), ("b1", "dev-b"), ("a2", "dev-a"), ("a3", "dev-a")]:
        submit(store, job_id, device=device)
    assert [j.job_id for j in store.queued_jobs("dev-a", 10)] == ["a1", "a2", "a3"]
    assert [j.job_id for j in store.queued_jobs("dev-a", 2)] == ["a1", "a2"]
    assert [j.job_id for j in store.queued_jobs("dev-b", 10)] == ["b1"]

    a1 = store.get_job("a1")
    assert a1 is not None
    move(store, a1, JobState.DISPATCHED)
    assert [j.job_id for j in store.queued_jobs("dev-a", 10)] == ["a2", "a3"]
    assert store.queued_jobs("dev-none", 10) == []


def test_queue_depths_count_only_queued_jobs(store: BrokerStore) -> None:
    for job_id, device in [("a1", "dev-a"), ("a2", "dev-a"), ("b1", "dev-b")]:
        submit(store, job_id, device=device)
    assert store.queue_depths() == {"dev-a": 2, "dev-b": 1}
    b1 = store.get_job("b1")
    assert b1 is not None
    move(store, b1, JobState.CANCELLED)
    assert store.queue_depths() == {"dev-a": 2}


def test_leased_jobs_are_dispatched_or_running(store: BrokerStore) -> None:
    jobs = [submit(store, f"j{i}") for i in range(4)]
    dispatched = move(store, jobs[0], JobState.DISPATCHED)
    running = move(store, move(store, jobs[1], JobState.DISPATCHED), JobState.RUNNING)
    move(store, move(store, jobs[2], JobState.DISPATCHED), JobState.FAILED)
    assert store.leased_jobs() == [dispatched, running]


def test_list_jobs_filters_and_pages_newest_first(store: BrokerStore) -> None:
    for i in range(7):
        submit(store, f"j{i}", owner="alice" if i % 2 == 0 else "bob", device=f"dev-{i % 3}")
    j0 = store.get_job("j0")
    assert j0 is not None
    move(store, j0, JobState.CANCELLED)

    listed = store.list_jobs()
    assert [job.job_id for _, job in listed] == [f"j{i}" for i in reversed(range(7))]
    seqs = [seq for seq, _ in listed]
    assert seqs == sorted(seqs, reverse=True)
    assert [j.job_id for _, j in store.list_jobs(owner="bob")] == ["j5", "j3", "j1"]
    assert [j.job_id for _, j in store.list_jobs(device_id="dev-0")] == ["j6", "j3", "j0"]
    cancelled = store.list_jobs(states=[JobState.CANCELLED, JobState.FAILED])
    assert [j.job_id for _, j in cancelled] == ["j0"]
    assert [j.job_id for _, j in store.list_jobs(owner="alice", states=[JobState.QUEUED])] == [
        "j6",
        "j4",
        "j2",
    ]

    pages: list[list[str]] = []
    before: int | None = None
    while page := store.list_jobs(limit=3, before_seq=before):
        pages.append([job.job_id for _, job in page])
        before = page[-1][0]
    assert pages == [["j6", "j5", "j4"], ["j3", "j2", "j1"], ["j0"]]


def test_result_is_stored_with_completion_in_one_transaction(store: BrokerStore) -> None:
    running = move(store, move(store, submit(store, "j1"), JobState.DISPATCHED), JobState.RUNNING)
    done = running.transition(JobState.COMPLETED, now=T0 + 3)
    before = audit_count(store)

    # A failure after the job row and result row were written must undo both.
    unserializable = AuditEvent(
        kind="job.completed", actor="d", subject="j1", at=T0, detail={"x": {1j}}
    )
    with pytest.raises(TypeError):
        store.save_job(
            done, expected_version=running.version, event=unserializable, result=result_for(done)
        )
    assert store.get_job("j1") == running
    assert store.get_result("j1") is None

    ok = store.save_job(
        done,
        expected_version=running.version,
        event=event("job.completed", "j1"),
        result=result_for(done),
    )
    assert ok
    assert store.get_job("j1") == done
    assert store.get_result("j1") == result_for(done)
    assert audit_count(store) == before + 1
    assert store.get_result("j2") is None


def test_per_shot_memory_round_trips_byte_for_byte(store: BrokerStore) -> None:
    running = move(store, move(store, submit(store, "j1"), JobState.DISPATCHED), JobState.RUNNING)
    done = running.transition(JobState.COMPLETED, now=T0 + 3)
    # 1024 five-bit shots, one byte each, every byte value a shot can take and a zero byte.
    memory = bytes([0, 31, 1, 30] * 256)
    result = dataclasses.replace(result_for(done), memory=memory, memory_width=5)
    assert store.save_job(
        done, expected_version=running.version, event=event("job.completed", "j1"), result=result
    )
    stored = store.get_result("j1")
    assert stored == result
    assert stored is not None
    assert stored.memory == memory
    assert stored.memory_width == 5


def test_audit_chain_links_every_write(store: BrokerStore) -> None:
    job = submit(store, "j1")
    appended = store.append_audit(
        event("attestation.failed", "dev-a", reason="stale nonce", nested={"ok": [1, 2.5, None]})
    )
    move(store, job, JobState.CANCELLED)
    # A whole-second timestamp (an int) must hash the same after the float column returns it.
    store.append_audit(AuditEvent(kind="tick", actor="clock", subject="-", at=1_760_000_000))
    entries = store.audit_entries()
    assert [e.seq for e in entries] == [1, 2, 3, 4]
    assert entries[0].prev_hash == GENESIS_HASH
    assert entries[1] == appended
    assert entries[1].event.detail == {"reason": "stale nonce", "nested": {"ok": [1, 2.5, None]}}
    assert verify_chain(entries) is None
    # Paging: the second page verifies when seeded with the last hash of the first.
    first, rest = store.audit_entries(limit=1), store.audit_entries(after_seq=1)
    assert verify_chain(rest, prev_hash=first[-1].entry_hash) is None


def test_audit_appends_from_two_connections_stay_one_chain(backend: Backend) -> None:
    stores = [backend.open(), backend.open()]
    stores[0].migrate()
    errors: list[BaseException] = []

    def append_many(target: BrokerStore, name: str) -> None:
        try:
            for i in range(25):
                target.append_audit(event("load", f"{name}-{i}"))
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [
        threading.Thread(target=append_many, args=(s, f"t{n}")) for n, s in enumerate(stores)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    entries = stores[0].audit_entries()
    assert len(entries) == 50
    assert verify_chain(entries) is None


def test_a_store_refuses_work_before_migrate(backend: Backend) -> None:
    fresh = backend.open()
    with pytest.raises(StoreError):
        fresh.get_job("j1")
    fresh.migrate()
    assert fresh.get_job("j1") is None


def test_migrate_twice_is_harmless(backend: Backend, store: BrokerStore) -> None:
    job = submit(store, "j1")
    store.migrate()
    other = backend.open()
    other.migrate()
    assert store.get_job("j1") == job
    assert other.get_job("j1") == job
    assert audit_count(other) == 1


def test_data_survives_close_and_reopen(backend: Backend, store: BrokerStore) -> None:
    job = move(store, submit(store, "j1", key="k"), JobState.DISPATCHED)
    entries = store.audit_entries()
    store.close()
    reopened = backend.open()
    reopened.migrate()
    assert reopened.get_job("j1") == job
    assert reopened.audit_entries() == entries
    assert reopened.insert_job(make_job("j2", key="k"), event("x", "j2")) == (job, False)


def test_closed_store_raises_store_error(store: BrokerStore) -> None:
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.get_job("j1")
