"""The dispatch gate (broker/link/dispatcher.py): a queued job is leased only to an idle
connection whose attestation affirms, only while the device accepts work and its schedule and
sessions let the queue move, and only if the owner's clearance still allows it at that moment."""

from __future__ import annotations

import dataclasses

from attestation.keys import KeyKind, SigningKey
from broker.devices.model import DeviceStatus, OperatingState, WindowKind
from broker.devices.operations import WindowRequest
from broker.jobs.model import JobState
from broker.link import messages as m
from tests.unit.core.harness import (
    CALIBRATION,
    Core,
    amend_principal,
    attested,
    connection,
    events,
    job_of,
    metric,
    only,
    queued,
    request,
    start_ticks,
)


async def test_no_job_is_leased_before_the_connection_attests(core: Core) -> None:
    await core.register()
    driver = core.driver()
    await driver.hello()
    job_id = await queued(core)
    await core.pump()
    assert only(driver.heard(), m.LeaseGrant) == []
    assert (await job_of(core, job_id)).state is JobState.QUEUED
    assert events(core, "job.dispatched") == []


async def test_a_rejected_connection_gets_nothing_while_an_attested_one_does(
    core: Core,
) -> None:
    await core.register()
    impostor = core.driver()
    impostor.kit = dataclasses.replace(impostor.kit, key=SigningKey.generate(KeyKind.ED25519))
    assert not (await impostor.attest()).affirming
    job_id = await queued(core)
    await core.pump()
    assert only(impostor.heard(), m.LeaseGrant) == []
    assert (await job_of(core, job_id)).state is JobState.QUEUED
    honest = core.driver()
    assert (await honest.attest()).affirming
    await core.pump()
    assert [g.job_id for g in honest.grants()] == [job_id]
    assert impostor.grants() == []


async def test_the_grant_carries_the_circuit_and_a_fresh_32_byte_nonce(core: Core) -> None:
    driver = await attested(core)
    first = await queued(core)
    core.clock.advance(1)  # jobs of one project run in submission order
    second = await queued(core)
    await core.pump()
    [grant] = driver.grants()  # one connection, one lease at a time
    job = await job_of(core, grant.job_id)
    assert grant.job_id == first
    assert job.state is JobState.DISPATCHED
    assert grant.circuit == job.circuit
    assert grant.circuit.payload == request().payload
    assert grant.shots == 100
    assert len(grant.dispatch_nonce) == 32
    assert job.lease is not None
    assert (grant.lease_id, grant.dispatch_nonce) == (job.lease.lease_id, job.lease.dispatch_nonce)
    assert grant.lease_seconds == core.parts.base.settings.timing.lease_seconds
    await driver.finish(grant)
    await core.pump()
    [next_grant] = driver.grants()
    assert next_grant.job_id == second
    assert next_grant.dispatch_nonce != grant.dispatch_nonce


async def test_the_job_records_the_evidence_and_calibration_it_left_under(core: Core) -> None:
    driver = await attested(core)
    job_id = await queued(core)
    await core.pump()
    job = await job_of(core, job_id)
    conn = connection(driver)
    assert conn.attestation is not None
    assert job.evidence_digest == conn.attestation.evidence_digest != ""
    assert job.calibration_digest == CALIBRATION
    assert job.attempts == 1
    [dispatched] = events(core, "job.dispatched")
    assert dispatched.subject == job_id
    assert dispatched.detail["evidence_digest"] == job.evidence_digest
    assert dispatched.detail["rule"] == "researcher-dispatch"
    assert metric(core, "qtestbed_queue_wait_seconds_count", device="dev-open") == 1


async def test_an_expired_clearance_denies_the_job_at_dispatch(core: Core) -> None:
    driver = await attested(core)
    job_id = await queued(core)
    await amend_principal(core, "alice", clearance_expires_at=core.clock.now() - 1)
    await core.pump()
    job = await job_of(core, job_id)
    assert job.state is JobState.DENIED
    assert job.rule_id == "researcher-dispatch/clearance"
    assert "clearance expired" in job.reason
    assert (job.lease, job.attempts) == (None, 0)
    assert only(driver.heard(), m.LeaseGrant) == []
    [denied] = events(core, "clearance.denied")
    assert denied.subject == job_id
    assert denied.detail["stage"] == "dispatch"
    assert denied.detail["rule"] == "researcher-dispatch/clearance"
    assert events(core, "job.dispatched") == []
    rule = "researcher-dispatch/clearance"
    assert metric(core, "qtestbed_clearance_denials_total", rule=rule, stage="dispatch") == 1


async def test_leaving_the_project_denies_the_job_and_the_next_one_still_runs(
    core: Core,
) -> None:
    driver = await attested(core)
    alices = await queued(core)
    core.clock.advance(1)
    bobs = await queued(core, "bob")
    await amend_principal(core, "alice", projects=("ops",))
    await core.pump()
    assert (await job_of(core, alices)).state is JobState.DENIED
    assert (await job_of(core, alices)).rule_id == "researcher-dispatch/project"
    [grant] = driver.grants()
    assert grant.job_id == bobs


async def test_a_device_quarantined_while_queued_holds_its_queue(core: Core) -> None:
    driver = await attested(core)
    registry = core.parts.registries.devices
    job_id = await queued(core)
    await registry.set_status("olivia", "dev-open", DeviceStatus.QUARANTINED, "inspection")
    await core.pump()
    assert driver.grants() == []
    job = await job_of(core, job_id)
    assert (job.state, job.attempts) == (JobState.QUEUED, 0)
    # Released after a fresh passing attestation, the queue moves again.
    again = core.driver()
    assert (await again.attest()).affirming
    await core.parts.services.device_admin.release("olivia", "dev-open", "fixed")
    await core.pump()
    [grant] = driver.grants() + again.grants()
    assert grant.job_id == job_id


async def test_a_device_revoked_while_queued_holds_its_queue(core: Core) -> None:
    driver = await attested(core)
    job_id = await queued(core)
    await core.parts.services.device_admin.revoke("sam", "dev-open", "key leaked")
    await core.pump()
    assert driver.grants() == []
    assert (await job_of(core, job_id)).state is JobState.QUEUED
    assert events(core, "job.dispatched") == []


async def test_maintenance_holds_the_queue_until_the_device_is_online(core: Core) -> None:
    driver = await attested(core)
    schedule = core.parts.registries.schedule
    job_id = await queued(core)
    await schedule.set_state("olivia", "dev-open", OperatingState.MAINTENANCE, "cooldown")
    await core.pump()
    assert driver.grants() == []
    assert (await job_of(core, job_id)).state is JobState.QUEUED
    await schedule.set_state("olivia", "dev-open", OperatingState.ONLINE, "")
    await core.pump()
    assert [g.job_id for g in driver.grants()] == [job_id]


async def test_a_maintenance_window_holds_the_queue_until_it_ends(core: Core) -> None:
    driver = await attested(core)
    await start_ticks(core)
    job_id = await queued(core)
    now = core.clock.now()
    window = WindowRequest(kind=WindowKind.MAINTENANCE, starts_at=now, ends_at=now + 30)
    await core.parts.registries.schedule.add_window("olivia", "dev-open", window)
    await core.pump()
    assert driver.grants() == []
    core.clock.advance(31)
    await driver.say(m.Heartbeat(seq=1))
    await core.parts.link.hub.tick()  # kicks the device's queue
    await core.pump()
    assert [g.job_id for g in driver.grants()] == [job_id]


async def test_a_session_holds_the_device_for_its_own_jobs(core: Core) -> None:
    driver = await attested(core)
    bobs = await queued(core, "bob")
    session = await core.parts.services.sessions.open("alice", "dev-open", "lab", 0)
    in_session = await queued(core, "alice", request(session_id=session.session_id))
    await core.pump()
    [grant] = driver.grants()
    assert grant.job_id == in_session
    await driver.finish(grant)
    await core.pump()
    assert driver.grants() == []  # the session is still open: bob's job waits
    assert (await job_of(core, bobs)).state is JobState.QUEUED
    await core.parts.services.sessions.close("alice", session.session_id, "done")
    await core.pump()
    assert [g.job_id for g in driver.grants()] == [bobs]


async def test_a_device_whose_pipeline_is_full_is_busy_not_unavailable(core: Core) -> None:
    """`available` says the device takes work: its one connection holding its one lease (a
    device running a deep queue back to back, nearly always) is still available, and one whose
    attestation lapsed is not."""
    driver = await attested(core)
    await queued(core)
    await queued(core)
    await core.pump()
    assert len(driver.grants()) == 1  # its pipeline is full
    directory = core.parts.services.directory
    view = await directory.get("alice", "dev-open")
    assert (view.available, view.queue_depth) == (True, 1)
    assert [d.available for d in await directory.list("alice")] == [True]
    conn = connection(driver)
    assert conn.attestation is not None
    core.clock.advance(conn.attestation.expires_at - core.clock.now() + 1)
    assert not (await directory.get("alice", "dev-open")).available
