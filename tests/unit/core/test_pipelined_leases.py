"""Pipelined dispatch (broker/link/pipeline.py, leases.py, fleet.py): a driver holds as many
leases as it asked for, within the broker's limit; each completes exactly once; a driver lost
gives every lease it held back; and a lease granted but not started is withdrawn when its grant
no longer stands (a quarantine, a clearance change): the driver is told to drop it, its job
says why, and a start or result for it is refused. Every slot a driver has room for is filled
in one dispatch pass, in queue order: the lease writes are all queued on the store before any
is awaited, and the access records are read again once, after all of them, before any grant
leaves; a lease whose write loses to another writer is not sent and the rest of the pass is."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from broker.devices.model import DeviceStatus
from broker.jobs.model import JobState
from broker.link import messages as m
from broker.store.base import StoreError
from tests.unit.core.harness import (
    Core,
    Driver,
    amend_principal,
    connection,
    events,
    job_of,
    metric,
    only,
    queued,
)

LIMIT = 3  # the broker's [timing] max_leases_per_driver here


@pytest.fixture
async def core() -> AsyncIterator[Core]:
    started = await Core(timing={"max_leases_per_driver": LIMIT}).start()
    try:
        yield started
    finally:
        started.close()


async def _pipelined(core: Core, asks: int = 8) -> Driver:
    await core.register("dev-open", tier="open", num_qubits=5)
    driver = core.driver()
    await driver.hello(max_leases=asks)
    assert (await driver.attest()).affirming
    return driver


async def _queue(core: Core, count: int, owner: str = "alice") -> list[str]:
    ids = []
    for _ in range(count):
        ids.append(await queued(core, owner))
        core.clock.advance(0.001)  # distinct submission times keep the queue's order plain
    return ids


def _refused(core: Core, reason: str) -> float:
    return metric(core, "qtestbed_link_refusals_total", reason=reason)


async def test_a_driver_holds_leases_up_to_the_broker_limit_and_each_completes_once(
    core: Core,
) -> None:
    driver = await _pipelined(core, asks=8)
    ids = await _queue(core, 5)
    await core.pump()
    grants = driver.grants()
    assert [g.job_id for g in grants] == ids[:LIMIT]  # asked for 8, the broker allows 3
    assert len(connection(driver).leases) == LIMIT
    for grant in grants:
        await driver.finish(grant)
        await driver.finish(grant)  # a second answer changes nothing
        await core.pump()
    more = driver.grants()
    assert [g.job_id for g in more] == ids[LIMIT:]
    for grant in more:
        await driver.finish(grant)
    for job_id in ids:
        assert (await job_of(core, job_id)).state is JobState.COMPLETED
    assert len(events(core, "job.completed")) == len(ids)
    assert _refused(core, "duplicate_result") == 2 * LIMIT  # its start and its result


async def test_a_lost_driver_gives_back_every_lease_it_held_started_or_not(core: Core) -> None:
    driver = await _pipelined(core)
    ids = await _queue(core, LIMIT)
    await core.pump()
    first, *_ = driver.grants()
    await driver.say(m.LeaseStarted(lease_id=first.lease_id, job_id=first.job_id))
    await driver.say(m.Goodbye(reason="power cut"))
    for job_id in ids:
        job = await job_of(core, job_id)
        assert (job.state, job.lease, job.attempts) == (JobState.QUEUED, None, 1)
    assert len(events(core, "job.requeued")) == LIMIT


async def test_a_clearance_change_withdraws_the_leases_not_yet_started(core: Core) -> None:
    driver = await _pipelined(core)
    alices = await _queue(core, LIMIT)
    await core.pump()
    running, *waiting = driver.grants()
    await driver.say(m.LeaseStarted(lease_id=running.lease_id, job_id=running.job_id))
    await amend_principal(core, "alice", clearance_expires_at=core.clock.now() - 1)
    await core.pump()
    cancels = {c.lease_id for c in only(driver.heard(), m.LeaseCancel)}
    assert cancels == {g.lease_id for g in waiting}  # the started one runs on
    for grant in waiting:
        job = await job_of(core, grant.job_id)
        assert (job.state, job.rule_id) == (JobState.DENIED, "researcher-dispatch/clearance")
    denials = [e for e in events(core, "clearance.denied") if e.detail["stage"] == "pipeline"]
    assert {e.subject for e in denials} == {g.job_id for g in waiting}
    # A driver that ran one anyway is not believed: its start and result are refused.
    late = waiting[0]
    await driver.finish(late)
    assert (await job_of(core, late.job_id)).state is JobState.DENIED
    assert _refused(core, "lease_withdrawn") == 2
    # Its "cancelled" answer to the withdrawal is expected, not refused.
    await driver.say(
        m.LeaseFailure(
            lease_id=waiting[1].lease_id,
            job_id=waiting[1].job_id,
            error="cancelled",
            permanent=False,
        )
    )
    assert _refused(core, "lease_withdrawn") == 2
    await driver.finish(running)
    assert (await job_of(core, running.job_id)).state is JobState.COMPLETED
    assert {j: (await job_of(core, j)).state for j in alices}[running.job_id] is JobState.COMPLETED


async def test_a_quarantine_gives_back_the_leases_not_yet_started(core: Core) -> None:
    driver = await _pipelined(core)
    ids = await _queue(core, LIMIT)
    await core.pump()
    grants = driver.grants()
    registry = core.parts.registries.devices
    await registry.set_status("olivia", "dev-open", DeviceStatus.QUARANTINED, "inspection")
    core.parts.registries.wakeups.kick("dev-open")  # as the hub's tick does for every device
    await core.pump()
    assert {c.lease_id for c in only(driver.heard(), m.LeaseCancel)} == {g.lease_id for g in grants}
    for job_id in ids:
        job = await job_of(core, job_id)
        assert (job.state, job.lease) == (JobState.QUEUED, None)  # held with the queue
    assert not connection(driver).leases
    await driver.finish(grants[0])
    assert (await job_of(core, ids[0])).state is JobState.QUEUED


async def test_a_lease_waiting_in_the_pipeline_expires_on_its_own_clock(core: Core) -> None:
    lease_seconds = core.parts.base.settings.timing.lease_seconds
    driver = await _pipelined(core)
    await _queue(core, 2)
    await core.pump()
    first, second = driver.grants()
    core.clock.advance(lease_seconds - 1)
    await driver.say(m.LeaseStarted(lease_id=first.lease_id, job_id=first.job_id))
    core.clock.advance(2)  # the waiting lease ran out; the started one's clock began again
    await core.parts.link.leases.reap(core.clock.now())
    assert (await job_of(core, first.job_id)).state is JobState.RUNNING
    assert (await job_of(core, second.job_id)).state is JobState.QUEUED
    assert [c.lease_id for c in only(driver.heard(), m.LeaseCancel)] == [second.lease_id]


def _record(core: Core, name: str, calls: list[str]) -> None:
    """Note each call of the store's `name` (on the store thread), then make it."""
    real: Callable[..., Any] = getattr(core.store, name)

    def noted(*args: Any, **kwargs: Any) -> Any:
        job = args[0] if args else None
        calls.append(f"{name}:{getattr(job, 'state', '')}")
        return real(*args, **kwargs)

    setattr(core.store, name, noted)


async def test_one_pass_writes_every_free_slot_and_reads_the_records_once_after(
    core: Core,
) -> None:
    driver = await _pipelined(core, asks=LIMIT)
    ids = await _queue(core, LIMIT + 2)
    calls: list[str] = []
    _record(core, "save_job", calls)
    _record(core, "access_fingerprint", calls)
    await core.parts.link.dispatcher.fill("dev-open")
    assert [g.job_id for g in driver.grants()] == ids[:LIMIT]  # queue order, every free slot
    dispatched = f"save_job:{JobState.DISPATCHED}"
    assert calls == [dispatched] * LIMIT + ["access_fingerprint:"]
    assert len(events(core, "job.dispatched")) == LIMIT
    for job_id in ids[LIMIT:]:
        assert (await job_of(core, job_id)).state is JobState.QUEUED


async def test_a_lease_that_loses_its_write_is_not_sent_and_the_rest_of_the_pass_is(
    core: Core,
) -> None:
    driver = await _pipelined(core, asks=LIMIT)
    ids = await _queue(core, LIMIT)
    real = core.store.save_job
    lost = ids[1]

    def racing(job: Any, **kwargs: Any) -> bool:
        if job.job_id == lost and job.state is JobState.DISPATCHED:
            cancelled = core.store.get_job(lost)
            assert cancelled is not None
            real(  # another writer (a cancel) gets there first
                cancelled.transition(JobState.CANCELLED, now=core.clock.now(), reason="x"),
                expected_version=cancelled.version,
                event=kwargs["event"],
            )
        return real(job, **kwargs)

    core.store.save_job = racing  # type: ignore[method-assign]
    await core.parts.link.dispatcher.fill("dev-open")
    core.store.save_job = real  # type: ignore[method-assign]
    assert [g.job_id for g in driver.grants()] == [ids[0], ids[2]]
    assert (await job_of(core, lost)).state is JobState.CANCELLED
    assert len(connection(driver).leases) == 2  # the lost one's slot is free again
    assert await core.parts.jobs.scheduler.next_job("dev-open") is None  # nothing left to lease


async def test_a_lease_write_that_fails_stops_the_pass_and_leaves_its_job_queued(
    core: Core,
) -> None:
    driver = await _pipelined(core, asks=LIMIT)
    ids = await _queue(core, LIMIT)
    real = core.store.save_job

    def failing(job: Any, **kwargs: Any) -> bool:
        if job.job_id == ids[1] and job.state is JobState.DISPATCHED:
            raise StoreError("disk full")
        return real(job, **kwargs)

    core.store.save_job = failing  # type: ignore[method-assign]
    with pytest.raises(StoreError):
        await core.parts.link.dispatcher.fill("dev-open")
    core.store.save_job = real  # type: ignore[method-assign]
    assert [g.job_id for g in driver.grants()] == [ids[0], ids[2]]  # the rest went out
    assert (await job_of(core, ids[1])).state is JobState.QUEUED
    assert len(connection(driver).leases) == 2  # its slot is free again
    await core.parts.link.dispatcher.fill("dev-open")  # the next pass leases it
    assert [g.job_id for g in driver.grants()][-1] == ids[1]
    assert (await job_of(core, ids[1])).state is JobState.DISPATCHED
