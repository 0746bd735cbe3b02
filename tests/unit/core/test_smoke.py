"""One job through the core without sockets: submit, attest, dispatch, result."""

from __future__ import annotations

from broker.jobs.model import JobState
from tests.unit.core.harness import Core, request


async def test_a_job_goes_from_submit_to_completed(core: Core) -> None:
    await core.register()
    driver = core.driver()
    verdict = await driver.attest()
    assert verdict.affirming, verdict.reasons
    submission = core.parts.services.submission
    [(view, created)] = await submission.submit_many("alice", [request()])
    assert created
    assert view.job.state is JobState.QUEUED
    await core.pump()
    [grant] = driver.grants()
    assert grant.job_id == view.job.job_id
    await driver.finish(grant)
    job = await core.parts.jobs.ledger.get(view.job.job_id)
    assert job is not None
    assert job.state is JobState.COMPLETED
