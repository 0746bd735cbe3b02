"""Group commit: writes made inside one batch share a transaction; each still fails alone."""

from __future__ import annotations

import asyncio
import threading

import pytest

from broker.audit.chain import verify_chain
from broker.audit.model import AuditEvent, Checkpoint
from broker.store import StoreError
from broker.store.base import BrokerStore
from broker.store.runner import StoreRunner
from tests.contract.conftest import Backend
from tests.contract.test_store_contract import audit_count, event, make_job


def _checkpoint(size: int) -> Checkpoint:
    return Checkpoint(tree_size=size, root_hash="0" * 64, at=1.0, key_id="k", envelope=b"{}")


def test_a_failing_write_rolls_back_alone(store: BrokerStore) -> None:
    with store.batch():
        store.insert_job(make_job("a"), event("job.submitted", "a"))
        store.add_checkpoint(_checkpoint(5))
        with pytest.raises(StoreError):
            store.add_checkpoint(_checkpoint(5))  # tree sizes must grow: refused
        store.insert_job(make_job("b"), event("job.submitted", "b"))
    assert store.get_job("a") is not None
    assert store.get_job("b") is not None
    assert [c.tree_size for c in store.checkpoints()] == [5]
    assert audit_count(store) == 2
    assert verify_chain(store.audit_entries()) is None


def test_a_failed_audited_write_leaves_no_gap_in_the_chain(store: BrokerStore) -> None:
    unserializable = AuditEvent(
        kind="job.submitted", actor="a", subject="b", at=0.0, detail={"x": {1j}}
    )
    with store.batch():
        store.insert_job(make_job("a"), event("job.submitted", "a"))
        with pytest.raises(TypeError):
            store.insert_job(make_job("b"), unserializable)
        store.insert_job(make_job("c"), event("job.submitted", "c"))
    assert store.get_job("b") is None
    assert [job.job_id for _seq, job in store.list_jobs()] == ["c", "a"]
    entries = store.audit_entries()
    assert [(e.seq, e.event.subject) for e in entries] == [(1, "a"), (2, "c")]
    assert verify_chain(entries) is None


def test_an_aborted_batch_writes_nothing(backend: Backend, store: BrokerStore) -> None:
    def crash_inside_batch() -> None:
        with store.batch():
            store.insert_job(make_job("a"), event("job.submitted", "a"))
            raise RuntimeError("crash before commit")

    with pytest.raises(RuntimeError):
        crash_inside_batch()
    reopened = backend.open()
    assert reopened.get_job("a") is None
    assert audit_count(reopened) == 0


def test_other_stores_neither_see_nor_join_an_open_batch(
    backend: Backend, store: BrokerStore
) -> None:
    # Other connections, or other broker replicas: one store each, as no store is shared
    # between threads.
    reader, writer = backend.open(), backend.open()
    seen: list[list[str]] = []
    wrote = threading.Event()

    def read() -> None:
        seen.append([entry.event.subject for entry in reader.audit_entries()])

    def write() -> None:
        writer.append_audit(event("denied", "b"))
        wrote.set()

    threads = [threading.Thread(target=read), threading.Thread(target=write)]

    def abort_after_others_tried() -> bool:
        with store.batch():
            store.append_audit(event("denied", "a"))
            for thread in threads:
                thread.start()
            finished_inside = wrote.wait(0.2)  # the other writer must wait for the batch
            raise RuntimeError(f"abort the batch (other write finished: {finished_inside})")

    with pytest.raises(RuntimeError, match="finished: False"):
        abort_after_others_tried()
    for thread in threads:
        thread.join(10)
    # Never the batch's uncommitted entry; the other writer's may already be there.
    assert seen in ([[]], [["b"]])
    assert [entry.event.subject for entry in store.audit_entries()] == ["b"]
    assert verify_chain(store.audit_entries()) is None


def test_runner_groups_concurrent_writes_and_all_are_durable(
    backend: Backend, store: BrokerStore
) -> None:
    runner = StoreRunner(store)

    async def burst() -> list[bool]:
        calls = [
            runner.call(store.insert_job, make_job(f"j{i}"), event("job.submitted", f"j{i}"))
            for i in range(200)
        ]
        return [created for _job, created in await asyncio.gather(*calls)]

    assert all(asyncio.run(burst()))
    assert runner.calls == 200
    assert runner.batches < runner.calls  # some calls shared a commit
    runner.close()
    reopened = backend.open()
    assert len(reopened.list_jobs(limit=500)) == 200
    assert verify_chain(reopened.audit_entries(limit=500)) is None
