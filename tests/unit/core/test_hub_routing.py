"""The driver hub (broker/link/hub.py): messages before Hello are refused, a second Hello
replaces the connection, and the tick heartbeats, drops unreachable drivers and moves queues."""

from __future__ import annotations

from broker.jobs.model import JobState
from broker.link import messages as m
from broker.link.fake import make_peer
from tests.unit.core.harness import (
    Core,
    attested,
    connection,
    events,
    job_of,
    metric,
    only,
    queued,
    start_ticks,
)


async def test_a_message_before_hello_gets_goodbye_hello_first(core: Core) -> None:
    stranger, _ = make_peer("dev-open")
    await core.parts.link.hub.route(stranger, m.Heartbeat(seq=1))
    said = core.link.take(stranger)
    [goodbye] = only(said, m.Goodbye)
    assert said == [goodbye]
    assert goodbye.code is m.GoodbyeCode.HELLO_FIRST
    assert core.parts.jobs.fleet.get(stranger) is None
    assert metric(core, "qtestbed_driver_heartbeats_total", device="dev-open") == 0


async def test_a_result_before_hello_changes_nothing(core: Core) -> None:
    driver = await attested(core)
    job_id = await queued(core)
    await core.pump()
    [grant] = driver.grants()
    stranger, _ = make_peer("dev-open")
    result = m.LeaseResult(
        lease_id=grant.lease_id,
        job_id=job_id,
        counts={"00": grant.shots},
        execution_seconds=0.01,
        receipt=driver.receipt(grant, {"00": grant.shots}),
    )
    await core.parts.link.hub.route(stranger, result)
    assert only(core.link.take(stranger), m.Goodbye)[0].code is m.GoodbyeCode.HELLO_FIRST
    assert (await job_of(core, job_id)).state is JobState.DISPATCHED
    assert events(core, "job.completed") == []


async def test_a_second_hello_replaces_the_connection_and_requeues_its_job(core: Core) -> None:
    driver = await attested(core)
    job_id = await queued(core)
    await core.pump()
    [grant] = driver.grants()
    old = connection(driver)
    await driver.hello()
    new = connection(driver)
    assert new is not old
    assert not new.leases
    assert only(driver.heard(), m.Challenge)  # the new connection must attest afresh
    job = await job_of(core, job_id)
    assert (job.state, job.attempts) == (JobState.QUEUED, 1)
    assert "said hello again" in job.reason
    [requeued] = events(core, "job.requeued")
    assert requeued.subject == job_id
    assert metric(core, "qtestbed_driver_connections", device="dev-open") == 1
    await core.pump()
    assert driver.grants() == []  # not attested yet
    assert (await driver.attest()).affirming
    await core.pump()
    [again] = driver.grants()
    assert again.job_id == job_id
    assert again.lease_id != grant.lease_id
    await driver.finish(grant)  # the old connection's lease is gone
    assert (await job_of(core, job_id)).state is JobState.DISPATCHED
    await driver.finish(again)
    assert (await job_of(core, job_id)).state is JobState.COMPLETED


async def test_a_tick_heartbeats_every_connection_and_counts_theirs(core: Core) -> None:
    first = await attested(core)
    second = core.driver()
    assert (await second.attest()).affirming
    await start_ticks(core)
    await first.say(m.Heartbeat(seq=7))
    await core.parts.link.hub.tick()
    await core.parts.link.hub.tick()
    for driver in (first, second):
        assert only(driver.heard(), m.Heartbeat) == [m.Heartbeat(seq=1), m.Heartbeat(seq=2)]
    assert metric(core, "qtestbed_driver_heartbeats_total", device="dev-open") == 1


async def test_a_tick_drops_an_unreachable_driver_and_requeues_its_job(core: Core) -> None:
    driver = await attested(core)
    await start_ticks(core)
    job_id = await queued(core)
    await core.pump()
    assert driver.grants()
    core.link.drop(driver.peer)
    await core.parts.link.hub.tick()
    assert core.parts.jobs.fleet.get(driver.peer) is None
    job = await job_of(core, job_id)
    assert job.state is JobState.QUEUED
    assert "unreachable" in job.reason
    cause = {"device": "dev-open", "cause": "driver_lost"}
    assert metric(core, "qtestbed_lease_requeues_total", **cause) == 1


async def test_a_grant_that_cannot_be_sent_gives_the_job_back(core: Core) -> None:
    driver = await attested(core)
    job_id = await queued(core)
    core.link.drop(driver.peer)
    await core.pump()
    assert core.parts.jobs.fleet.get(driver.peer) is None
    job = await job_of(core, job_id)
    assert (job.state, job.attempts) == (JobState.QUEUED, 1)
    assert "unreachable when the lease was sent" in job.reason
