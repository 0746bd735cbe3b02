"""Group commit: writes made inside one batch share a transaction; each still fails alone."""

from __future__ import annotations

import asyncio

import pytest

from broker.audit.chain import verify_chain
from broker.audit.model import Checkpoint
from broker.store import StoreError
from broker.store.runner import StoreRunner
from broker.store.sql_store import SqlStore
from tests.contract.conftest import Backend
from tests.contract.test_store_contract import audit_count, event, make_job


def _checkpoint(size: int) -> Checkpoint:
    return Checkpoint(tree_size=size, root_hash="0" * 64, at=1.0, key_id="k", envelope=b"{}")


def test_a_failing_write_rolls_back_alone(store: SqlStore) -> None:
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


def test_an_aborted_batch_writes_nothing(backend: Backend, store: SqlStore) -> None:
    def crash_inside_batch() -> None:
        with store.batch():
            store.insert_job(make_job("a"), event("job.submitted", "a"))
            raise RuntimeError("crash before commit")

    with pytest.raises(RuntimeError):
        crash_inside_batch()
    reopened = backend.open()
    assert reopened.get_job("a") is None
    assert audit_count(reopened) == 0


def test_runner_groups_concurrent_writes_and_all_are_durable(
    backend: Backend, store: SqlStore
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
