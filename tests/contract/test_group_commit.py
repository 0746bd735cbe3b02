"""Group commit: writes made inside one batch share a transaction; each still fails alone."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from pathlib import Path

import pytest

from broker.audit.chain import verify_chain
from broker.audit.model import AuditEvent, Checkpoint
from broker.jobs.model import JobState
from broker.store import CheckpointSuperseded
from broker.store.base import BrokerStore
from broker.store.runner import StoreRunner
from tests.contract.conftest import Backend, SqlBackend, _open_sql_backend
from tests.contract.test_store_contract import audit_count, event, make_job


def _checkpoint(size: int) -> Checkpoint:
    return Checkpoint(tree_size=size, root_hash="0" * 64, at=1.0, key_id="k", envelope=b"{}")


def test_a_failing_write_rolls_back_alone(store: BrokerStore) -> None:
    with store.batch():
        store.insert_job(make_job("a"), event("job.submitted", "a"))
        store.add_checkpoint(_checkpoint(5))
        with pytest.raises(CheckpointSuperseded):
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


def _waiting_on_advisory_locks(backend: SqlBackend, keys: list[int]) -> bool:
    """Whether a session waits for one of these advisory locks (64-bit keys: classid holds the
    high 32 bits, objid the low)."""
    wanted = {((k & (2**64 - 1)) >> 32, k & 0xFFFFFFFF) for k in keys}
    rows = backend.raw(
        "SELECT classid::bigint, objid::bigint FROM pg_locks"
        " WHERE locktype = 'advisory' AND objsubid = 1 AND NOT granted"
    )
    return any((int(c), int(o)) in wanted for c, o in rows)


@pytest.mark.postgres
def test_two_batches_mixing_audited_and_queue_writes_do_not_deadlock(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Group commit puts several writes in one transaction, so one worker's batch can take the
    audit lock (a job's result) before the queue lock (a submission) while another worker's
    takes them the other way round (a requeue, then an audited write). Seen under load with
    two worker processes: PostgreSQL broke the cycle by failing one of the writes ("deadlock
    detected"), and a submission was answered UNAVAILABLE. Every batch must take them in one
    order."""
    from broker.store.postgres import _lock_key

    with _open_sql_backend("postgres", request, tmp_path) as backend:
        first, second = backend.open(), backend.open()
        first.migrate()
        schema = first.schema  # type: ignore[attr-defined]
        x, _ = first.insert_job(make_job("x"), event("job.submitted", "x"))
        y, _ = first.insert_job(make_job("y"), event("job.submitted", "y"))
        errors: list[BaseException] = []

        def requeue_then_audit() -> None:
            try:
                with second.batch():
                    requeued = dataclasses.replace(y, version=y.version + 1, attempts=1)
                    second.save_job(requeued, expected_version=y.version)  # queue lock
                    second.append_audit(event("job.requeued", "y"))  # audit lock
            except BaseException as exc:
                errors.append(exc)

        other = threading.Thread(target=requeue_then_audit)
        with first.batch():
            running = dataclasses.replace(x, state=JobState.RUNNING, version=x.version + 1)
            first.save_job(running, expected_version=x.version, event=event("job.running", "x"))
            other.start()
            keys = [_lock_key(purpose, schema) for purpose in ("audit", "queue")]
            deadline = time.monotonic() + 10
            while not _waiting_on_advisory_locks(backend, keys):
                assert time.monotonic() < deadline, "the other batch never waited for a lock"
                time.sleep(0.01)
            first.insert_job(make_job("z"), event("job.submitted", "z"))  # queue, then audit
        other.join(30)
        assert not other.is_alive()
        assert errors == []
        assert first.get_job("z") is not None
        assert first.get_job("y").attempts == 1  # type: ignore[union-attr]
        entries = first.audit_entries()
        kinds = [e.event.kind for e in entries][-3:]
        assert kinds == ["job.running", "job.submitted", "job.requeued"]
        assert verify_chain(entries) is None


@pytest.mark.postgres
def test_two_processes_writing_one_job_do_not_deadlock_on_its_row_and_the_audit_lock(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """One worker's batch holds the audit lock (an audited write first) and then writes a job
    that another worker is writing at the same moment (a cancel through one, the job's result
    through the other). The other write must wait for the audit lock before it locks the
    job's row, or each waits for the other: PostgreSQL then fails one of them."""
    from broker.store.postgres import _lock_key

    with _open_sql_backend("postgres", request, tmp_path) as backend:
        first, second = backend.open(), backend.open()
        first.migrate()
        schema = first.schema  # type: ignore[attr-defined]
        job, _ = first.insert_job(make_job("j"), event("job.submitted", "j"))
        outcomes: list[object] = []

        def complete() -> None:
            try:
                done = dataclasses.replace(job, state=JobState.COMPLETED, version=job.version + 1)
                with second.batch():
                    outcomes.append(
                        second.save_job(
                            done, expected_version=job.version, event=event("job.completed", "j")
                        )
                    )
            except BaseException as exc:
                outcomes.append(exc)

        other = threading.Thread(target=complete)
        with first.batch():
            first.append_audit(event("denied", "k"))  # the audit lock, held until commit
            other.start()
            deadline = time.monotonic() + 10
            while not _waiting_on_advisory_locks(backend, [_lock_key("audit", schema)]):
                assert time.monotonic() < deadline, "the other write never waited"
                time.sleep(0.01)
            cancelled = dataclasses.replace(job, state=JobState.CANCELLED, version=job.version + 1)
            assert first.save_job(
                cancelled, expected_version=job.version, event=event("job.cancelled", "j")
            )
        other.join(30)
        assert not other.is_alive()
        assert outcomes == [False]  # the cancel won; the result's write lost its compare-and-set
        assert first.get_job("j").state is JobState.CANCELLED  # type: ignore[union-attr]
        assert verify_chain(first.audit_entries()) is None
