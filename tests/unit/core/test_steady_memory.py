"""What the core keeps must not grow with the jobs it has completed: a broker serving a steady
load for hours holds what the current moment needs, not every past second's answers."""

from __future__ import annotations

from broker.jobs.model import JobState
from tests.unit.core.harness import Core, attested, request


async def test_cached_policy_answers_stay_flat_as_jobs_complete_second_after_second(
    core: Core,
) -> None:
    driver = await attested(core)
    submission = core.parts.services.submission
    engine = core.parts.registries.gate.engine
    held: list[int] = []
    for _ in range(30):  # one job a second: each second's submit and dispatch are new questions
        core.clock.advance(1.0)
        [(view, _)] = await submission.submit_many("alice", [request()])
        await core.pump()
        grant = driver.grants()[-1]
        assert grant.job_id == view.job.job_id
        await driver.finish(grant)
        job = await core.parts.jobs.ledger.get(view.job.job_id)
        assert job is not None
        assert job.state is JobState.COMPLETED
        held.append(engine.cached_answers)
    assert held[-1] <= held[4], held  # two seconds' questions, however many jobs ran before
