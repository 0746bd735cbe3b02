"""The lease keeper (broker/link/leases.py, receipts.py): a lease that ends without a result
gives its job back (up to the retry limit), a driver that goes away gives its job back at once,
only the connection holding a lease can finish it and only once, and a result whose receipt
does not verify is never stored."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest

from attestation.keys import KeyKind, SigningKey
from broker.jobs.model import JobState
from broker.link import messages as m
from tests.unit.core.harness import (
    Core,
    Driver,
    attested,
    connection,
    events,
    job_of,
    metric,
    only,
    queued,
    start_ticks,
)

LEASE = 10.0  # short leases keep the test clock below the first canary (60 s)


@pytest.fixture
async def short() -> AsyncIterator[Core]:
    started = await Core(timing={"lease_seconds": LEASE, "max_attempts": 2}).start()
    try:
        yield started
    finally:
        started.close()


async def _leased(core: Core) -> tuple[Driver, m.LeaseGrant]:
    driver = await attested(core)
    await queued(core)
    await core.pump()
    [grant] = driver.grants()
    return driver, grant


def _requeues(core: Core, cause: str) -> float:
    return metric(core, "qtestbed_lease_requeues_total", device="dev-open", cause=cause)


async def test_an_expired_lease_requeues_the_job(short: Core) -> None:
    core = short
    driver, grant = await _leased(core)
    core.clock.advance(LEASE - 1)
    await core.parts.link.leases.reap(core.clock.now())
    assert (await job_of(core, grant.job_id)).state is JobState.DISPATCHED
    core.clock.advance(2)
    await core.parts.link.leases.reap(core.clock.now())
    job = await job_of(core, grant.job_id)
    assert (job.state, job.lease, job.attempts) == (JobState.QUEUED, None, 1)
    assert "lease expired" in job.reason
    [requeued] = events(core, "job.requeued")
    assert requeued.subject == grant.job_id
    assert requeued.detail["attempts"] == 1
    assert _requeues(core, "expired") == 1
    assert not connection(driver).leases


async def test_the_hub_tick_reaps_the_expired_lease_of_a_live_driver(short: Core) -> None:
    core = short
    driver, grant = await _leased(core)
    await start_ticks(core)
    for seq in range(5):  # 12.5 s of heartbeats: the driver is alive, the lease runs out
        core.clock.advance(2.5)
        await driver.say(m.Heartbeat(seq=seq, active_lease_id=grant.lease_id))
    await core.parts.link.hub.tick()
    job = await job_of(core, grant.job_id)
    assert (job.state, job.attempts) == (JobState.QUEUED, 1)
    assert "lease expired" in job.reason
    assert _requeues(core, "expired") == 1
    assert _requeues(core, "driver_lost") == 0
    await core.pump()  # the tick kicked the queue; the same live connection gets it again
    [again] = driver.grants()
    assert (again.job_id, (await job_of(core, grant.job_id)).attempts) == (grant.job_id, 2)


async def test_the_late_result_of_an_expired_lease_is_ignored(short: Core) -> None:
    core = short
    driver, grant = await _leased(core)
    core.clock.advance(LEASE + 1)
    await core.parts.link.leases.reap(core.clock.now())
    await driver.finish(grant)
    assert (await job_of(core, grant.job_id)).state is JobState.QUEUED
    assert events(core, "job.completed") == []
    assert core.store.get_result(grant.job_id) is None


async def test_a_job_fails_once_its_attempts_are_used_up(short: Core) -> None:
    core = short
    driver, first = await _leased(core)
    core.clock.advance(LEASE + 1)
    await core.parts.link.leases.reap(core.clock.now())
    await core.pump()
    [second] = driver.grants()
    assert second.job_id == first.job_id
    assert second.lease_id != first.lease_id
    assert second.dispatch_nonce != first.dispatch_nonce
    core.clock.advance(LEASE + 1)
    await core.parts.link.leases.reap(core.clock.now())
    job = await job_of(core, first.job_id)
    assert (job.state, job.attempts) == (JobState.FAILED, 2)
    assert job.reason.startswith("gave up after 2 attempts")
    assert len(events(core, "job.requeued")) == 1
    [failed] = events(core, "job.failed")
    assert failed.subject == first.job_id
    await core.pump()
    assert driver.grants() == []


async def test_a_driver_that_says_goodbye_gives_its_job_back_at_once(core: Core) -> None:
    driver, grant = await _leased(core)
    await driver.say(m.Goodbye(reason="shutting down", code=m.GoodbyeCode.SHUTTING_DOWN))
    job = await job_of(core, grant.job_id)
    assert (job.state, job.attempts) == (JobState.QUEUED, 1)
    assert "driver said goodbye" in job.reason
    assert core.parts.jobs.fleet.get(driver.peer) is None
    assert _requeues(core, "driver_lost") == 1
    assert metric(core, "qtestbed_driver_connections", device="dev-open") == 0
    await core.pump()
    assert driver.grants() == []


async def test_a_driver_that_misses_its_heartbeats_gives_its_job_back(core: Core) -> None:
    driver, grant = await _leased(core)
    await core.parts.link.signer.start()
    timing = core.parts.base.settings.timing
    silence = timing.heartbeat_seconds * timing.heartbeat_misses
    core.clock.advance(silence - 0.5)
    await driver.say(m.Heartbeat(seq=1))
    core.clock.advance(silence - 0.5)
    await core.parts.link.hub.tick()
    assert (await job_of(core, grant.job_id)).state is JobState.DISPATCHED  # heard in time
    core.clock.advance(1)
    await core.parts.link.hub.tick()
    job = await job_of(core, grant.job_id)
    assert job.state is JobState.QUEUED
    assert "no heartbeat" in job.reason
    assert core.parts.jobs.fleet.get(driver.peer) is None
    assert _requeues(core, "driver_lost") == 1


async def test_a_result_for_a_lease_the_connection_does_not_hold_is_ignored(core: Core) -> None:
    holder, grant = await _leased(core)
    other = core.driver()
    assert (await other.attest()).affirming
    await other.finish(grant)  # a valid receipt, but not this connection's lease
    assert (await job_of(core, grant.job_id)).state is JobState.DISPATCHED
    forged = dataclasses.replace(grant, lease_id="not-a-lease")
    await holder.finish(forged)
    assert (await job_of(core, grant.job_id)).state is JobState.DISPATCHED
    assert (
        metric(core, "qtestbed_receipt_verifications_total", device="dev-open", outcome="verified")
        == 0
    )
    await holder.finish(grant)
    assert (await job_of(core, grant.job_id)).state is JobState.COMPLETED


async def test_a_second_result_is_ignored_and_the_job_completes_once(core: Core) -> None:
    driver, grant = await _leased(core)
    await driver.finish(grant, {"00": 60, "11": 40})
    await driver.finish(grant, {"01": 100})
    job = await job_of(core, grant.job_id)
    assert job.state is JobState.COMPLETED
    result = core.store.get_result(grant.job_id)
    assert result is not None
    assert dict(result.counts) == {"00": 60, "11": 40}
    assert len(events(core, "job.completed")) == 1
    verified = {"device": "dev-open", "outcome": "verified"}
    assert metric(core, "qtestbed_receipt_verifications_total", **verified) == 1


async def _rejected(core: Core, driver: Driver, grant: m.LeaseGrant, result: m.LeaseResult) -> None:
    """`result` was refused: nothing stored, audited, counted, job requeued, connection out."""
    await driver.say(m.LeaseStarted(lease_id=grant.lease_id, job_id=grant.job_id))
    await driver.say(result)
    job = await job_of(core, grant.job_id)
    assert (job.state, job.attempts) == (JobState.QUEUED, 1)
    assert core.store.get_result(grant.job_id) is None
    assert events(core, "job.completed") == []
    [rejected] = events(core, "receipt.rejected")
    assert rejected.subject == grant.job_id
    assert rejected.detail["problems"]
    rejected_label = {"device": "dev-open", "outcome": "rejected"}
    assert metric(core, "qtestbed_receipt_verifications_total", **rejected_label) == 1
    assert _requeues(core, "bad_receipt") == 1
    await core.pump()
    assert driver.grants() == []  # no more work for this connection


async def test_a_receipt_over_other_counts_is_rejected(core: Core) -> None:
    driver, grant = await _leased(core)
    signed_for = {"00": grant.shots}
    result = m.LeaseResult(
        lease_id=grant.lease_id,
        job_id=grant.job_id,
        counts={"11": grant.shots},
        execution_seconds=0.01,
        receipt=driver.receipt(grant, signed_for),
    )
    await _rejected(core, driver, grant, result)


async def test_counts_that_do_not_add_up_to_the_shots_are_rejected(core: Core) -> None:
    driver, grant = await _leased(core)
    counts = {"00": grant.shots // 2}
    result = m.LeaseResult(
        lease_id=grant.lease_id,
        job_id=grant.job_id,
        counts=counts,
        execution_seconds=0.01,
        receipt=driver.receipt(grant, counts),
    )
    await _rejected(core, driver, grant, result)
    [rejected] = events(core, "receipt.rejected")
    assert any("expected 100 shots" in p for p in rejected.detail["problems"])


async def test_a_receipt_signed_with_another_key_is_rejected(core: Core) -> None:
    driver, grant = await _leased(core)
    honest = driver.kit
    driver.kit = dataclasses.replace(honest, key=SigningKey.generate(KeyKind.ED25519))
    counts = {"00": grant.shots}
    result = m.LeaseResult(
        lease_id=grant.lease_id,
        job_id=grant.job_id,
        counts=counts,
        execution_seconds=0.01,
        receipt=driver.receipt(grant, counts),
    )
    await _rejected(core, driver, grant, result)
    # Attesting again (a new Hello on the same connection) brings the connection back.
    driver.kit = honest
    assert (await driver.attest()).affirming
    await core.pump()
    [again] = driver.grants()
    assert again.job_id == grant.job_id


async def test_cancelling_a_dispatched_job_sends_lease_cancel(core: Core) -> None:
    driver, grant = await _leased(core)
    view = await core.parts.services.jobs.cancel("alice", grant.job_id, "changed my mind")
    assert view.job.state is JobState.CANCELLED
    assert only(driver.heard(), m.LeaseCancel) == [m.LeaseCancel(lease_id=grant.lease_id)]
    [cancelled] = events(core, "job.cancelled")
    assert cancelled.detail == {"from": "DISPATCHED"}
    await driver.finish(grant)  # the result crossed the cancel: it is not stored
    assert (await job_of(core, grant.job_id)).state is JobState.CANCELLED
    assert core.store.get_result(grant.job_id) is None


async def test_cancelling_a_queued_job_sends_nothing(core: Core) -> None:
    driver = await attested(core)
    driver.heard()
    job_id = await queued(core)
    await core.parts.services.jobs.cancel("alice", job_id, "")
    await core.pump()
    assert driver.heard() == []
    assert (await job_of(core, job_id)).state is JobState.CANCELLED


async def test_a_late_failure_for_an_expired_lease_is_ignored(short: Core) -> None:
    core = short
    driver, old = await _leased(core)
    core.clock.advance(LEASE + 1)
    await core.parts.link.leases.reap(core.clock.now())
    await core.pump()
    [current] = driver.grants()  # the same job again, under a new lease
    await queued(core)
    late = m.LeaseFailure(lease_id=old.lease_id, job_id=old.job_id, error="late", permanent=False)
    await driver.say(late)
    assert list(connection(driver).leases) == [current.lease_id]
    await core.pump()
    assert driver.grants() == []  # still busy with `current`: no second lease
    await driver.finish(current)
    assert (await job_of(core, current.job_id)).state is JobState.COMPLETED


async def test_a_transient_driver_failure_requeues_the_job(core: Core) -> None:
    driver, grant = await _leased(core)
    await driver.say(
        m.LeaseFailure(
            lease_id=grant.lease_id, job_id=grant.job_id, error="fridge warm", permanent=False
        )
    )
    job = await job_of(core, grant.job_id)
    assert (job.state, job.attempts) == (JobState.QUEUED, 1)
    assert job.reason == "requeued: device error: fridge warm"
    assert _requeues(core, "driver_error") == 1
    await core.pump()
    [again] = driver.grants()  # the connection is still attested and idle
    assert again.job_id == grant.job_id


async def test_a_permanent_driver_failure_fails_the_job(core: Core) -> None:
    driver, grant = await _leased(core)
    await driver.say(
        m.LeaseFailure(
            lease_id=grant.lease_id, job_id=grant.job_id, error="bad gate", permanent=True
        )
    )
    job = await job_of(core, grant.job_id)
    assert (job.state, job.reason) == (JobState.FAILED, "device error: bad gate")
    [failed] = events(core, "job.failed")
    assert failed.detail == {"reason": "bad gate"}
    assert events(core, "job.requeued") == []


async def test_a_result_from_a_device_revoked_meanwhile_is_refused(core: Core) -> None:
    driver, grant = await _leased(core)
    await core.parts.services.device_admin.revoke("sam", "dev-open", "key leaked")
    await driver.finish(grant)
    job = await job_of(core, grant.job_id)
    assert job.state is JobState.QUEUED  # back in the (held) queue, never completed
    assert core.store.get_result(grant.job_id) is None
    [rejected] = events(core, "receipt.rejected")
    assert rejected.subject == grant.job_id


async def test_a_receipt_crossing_a_routine_re_attestation_is_accepted() -> None:
    core = await Core(timing={"attestation_ttl_seconds": 40.0}).start()
    try:
        await _crossing(core)
    finally:
        core.close()


async def _crossing(core: Core) -> None:
    driver, grant = await _leased(core)
    core.clock.advance(32)  # the routine re-challenge (under 25% of 40 s left), lease still live
    await core.parts.link.attestor.maintain(core.clock.now())
    [challenge] = only(driver.heard(), m.Challenge)
    counts = {"00": grant.shots}
    receipt = driver.receipt(grant, counts)  # signed under the evidence of the dispatch
    await driver.say(m.Evidence(envelope=driver.evidence(challenge.nonce)))
    assert only(driver.heard(), m.Verdict)[0].affirming
    await driver.say(
        m.LeaseResult(
            lease_id=grant.lease_id,
            job_id=grant.job_id,
            counts=counts,
            execution_seconds=0.01,
            receipt=receipt,
        )
    )
    assert events(core, "receipt.rejected") == []
    assert (await job_of(core, grant.job_id)).state is JobState.COMPLETED
