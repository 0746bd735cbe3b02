"""JobService through the real core: cancel, read, list and results, and who may see what
(another researcher's job is NOT_FOUND, exactly like a job that does not exist)."""

from __future__ import annotations

import pytest

from broker.errors import BrokerError, ErrorCode
from broker.jobs.model import Job, JobState
from broker.link import messages as m
from tests.unit.core.harness import (
    Core,
    Driver,
    attested,
    audit_mark,
    audit_since,
    metric,
    request,
)


async def _queued(core: Core, caller: str = "alice") -> Job:
    [(view, _)] = await core.parts.services.submission.submit_many(caller, [request()])
    return view.job


async def _stored(core: Core, job_id: str) -> Job:
    job = await core.parts.jobs.ledger.get(job_id)
    assert job is not None
    return job


async def _completed(core: Core, driver: Driver) -> Job:
    job = await _queued(core)
    await core.pump()
    [grant] = driver.grants()
    await driver.finish(grant, {"00": 60, "11": 40})
    done = await _stored(core, job.job_id)
    assert done.state is JobState.COMPLETED
    return done


async def test_cancelling_a_queued_job_cancels_it_audited_and_it_never_dispatches(
    core: Core,
) -> None:
    driver = await attested(core)
    job = await _queued(core)
    mark = audit_mark(core)
    view = await core.parts.services.jobs.cancel("alice", job.job_id, "")
    assert (view.job.state, view.queue_position) == (JobState.CANCELLED, 0)
    stored = await _stored(core, job.job_id)
    assert stored.state is JobState.CANCELLED
    assert stored.reason == "cancelled by alice"
    [event] = audit_since(core, mark)
    assert (event.kind, event.actor, event.subject) == ("job.cancelled", "alice", job.job_id)
    assert event.detail == {"from": "QUEUED"}
    assert metric(core, "qtestbed_jobs_total", device="dev-open", state="CANCELLED") == 1
    assert core.parts.jobs.scheduler.depth("dev-open") == 0
    await core.pump()
    assert driver.grants() == []


async def test_a_cancel_keeps_the_reason_given(core: Core) -> None:
    await core.register()
    job = await _queued(core)
    await core.parts.services.jobs.cancel("alice", job.job_id, "wrong circuit")
    assert (await _stored(core, job.job_id)).reason == "wrong circuit"


async def test_cancelling_a_finished_job_is_failed_precondition(core: Core) -> None:
    driver = await attested(core)
    done = await _completed(core, driver)
    mark = audit_mark(core)
    with pytest.raises(BrokerError) as info:
        await core.parts.services.jobs.cancel("alice", done.job_id, "")
    assert info.value.code is ErrorCode.FAILED_PRECONDITION
    assert info.value.detail == f"job {done.job_id} is already COMPLETED and cannot be cancelled"
    assert audit_since(core, mark) == []
    assert (await _stored(core, done.job_id)) == done


async def test_cancelling_twice_is_failed_precondition_the_second_time(core: Core) -> None:
    await core.register()
    job = await _queued(core)
    await core.parts.services.jobs.cancel("alice", job.job_id, "")
    with pytest.raises(BrokerError) as info:
        await core.parts.services.jobs.cancel("alice", job.job_id, "")
    assert info.value.code is ErrorCode.FAILED_PRECONDITION
    assert "already CANCELLED" in info.value.detail


async def test_cancelling_a_running_job_tells_its_driver_which_is_then_free(core: Core) -> None:
    driver = await attested(core)
    job = await _queued(core)
    await core.pump()
    [grant] = driver.grants()
    await driver.say(m.LeaseStarted(lease_id=grant.lease_id, job_id=grant.job_id))
    view = await core.parts.services.jobs.cancel("alice", job.job_id, "")
    assert view.job.state is JobState.CANCELLED
    assert m.LeaseCancel(lease_id=grant.lease_id) in driver.heard()
    failure = m.LeaseFailure(
        lease_id=grant.lease_id, job_id=job.job_id, error="cancelled", permanent=False
    )
    await driver.say(failure)
    assert (await _stored(core, job.job_id)).state is JobState.CANCELLED  # not requeued
    following = await _queued(core)
    await core.pump()
    assert [g.job_id for g in driver.grants()] == [following.job_id]


async def test_another_researchers_job_is_not_found_like_a_missing_one(core: Core) -> None:
    await core.register()
    job = await _queued(core, "alice")
    jobs = core.parts.services.jobs
    mark = audit_mark(core)
    for call in (jobs.get, jobs.result, lambda c, j: jobs.cancel(c, j, "")):
        with pytest.raises(BrokerError) as hidden:
            await call("bob", job.job_id)
        with pytest.raises(BrokerError) as missing:
            await call("bob", "no-such-job")
        assert hidden.value.code is missing.value.code is ErrorCode.NOT_FOUND
        assert hidden.value.detail == f"job {job.job_id!r} not found"
        assert missing.value.detail == "job 'no-such-job' not found"
    assert (await _stored(core, job.job_id)).state is JobState.QUEUED
    assert audit_since(core, mark) == []


async def test_an_operator_sees_and_cancels_any_job(core: Core) -> None:
    await core.register()
    job = await _queued(core, "alice")
    jobs = core.parts.services.jobs
    seen = await jobs.get("olivia", job.job_id)
    assert (seen.job.job_id, seen.job.owner, seen.queue_position) == (job.job_id, "alice", 1)
    mark = audit_mark(core)
    await jobs.cancel("olivia", job.job_id, "")
    stored = await _stored(core, job.job_id)
    assert (stored.state, stored.reason) == (JobState.CANCELLED, "cancelled by olivia")
    [event] = audit_since(core, mark)
    assert (event.kind, event.actor, event.subject) == ("job.cancelled", "olivia", job.job_id)


async def test_a_researcher_lists_only_their_own_jobs_and_an_operator_all(core: Core) -> None:
    await core.register()
    alices = await _queued(core, "alice")
    bobs = await _queued(core, "bob")
    jobs = core.parts.services.jobs

    async def listed(caller: str) -> set[str]:
        rows = await jobs.list_jobs(caller, device_id=None, states=(), limit=10, before_seq=None)
        return {view.job.job_id for _, view in rows}

    assert await listed("alice") == {alices.job_id}
    assert await listed("bob") == {bobs.job_id}
    assert await listed("olivia") == {alices.job_id, bobs.job_id}


async def test_a_result_exists_only_once_the_job_completed(core: Core) -> None:
    driver = await attested(core)
    waiting = await _queued(core)
    with pytest.raises(BrokerError) as info:
        await core.parts.services.jobs.result("alice", waiting.job_id)
    assert info.value.code is ErrorCode.FAILED_PRECONDITION
    assert "is QUEUED; a result exists only once it is COMPLETED" in info.value.detail
    await core.parts.services.jobs.cancel("alice", waiting.job_id, "")
    done = await _completed(core, driver)
    result = await core.parts.services.jobs.result("alice", done.job_id)
    assert dict(result.result.counts) == {"00": 60, "11": 40}
    assert result.result.device_id == "dev-open"
    assert result.device_certificate == core.devices["dev-open"].chain
    assert result.evidence  # the evidence the receipt names, from the attestation history


async def test_an_unregistered_caller_is_unauthenticated_even_for_a_missing_job(
    core: Core,
) -> None:
    with pytest.raises(BrokerError) as info:
        await core.parts.services.jobs.get("mallory", "no-such-job")
    assert info.value.code is ErrorCode.UNAUTHENTICATED
