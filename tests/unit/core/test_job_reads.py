"""Reads of jobs by id asked while the store is busy go together: many streams opened at once
cost the store a few calls, not one each, and each caller still gets what a read of its own
would give (someone else's job is NOT_FOUND)."""

from __future__ import annotations

import asyncio

import pytest

from broker.errors import BrokerError, ErrorCode
from tests.unit.core.harness import Core, request


async def test_many_reads_at_once_cost_a_few_store_calls_and_answer_each_caller(
    core: Core,
) -> None:
    await core.register()
    submission = core.parts.services.submission
    queued = await submission.submit_many("alice", [request()] * 50)
    alices = [view.job.job_id for view, _ in queued]
    [(bobs, _)] = await submission.submit_many("bob", [request()])
    jobs = core.parts.services.jobs
    calls = core.runner.calls
    views = await asyncio.gather(*(jobs.get("alice", job_id) for job_id in alices * 4))
    assert [view.job.job_id for view in views] == alices * 4
    assert core.runner.calls - calls <= 3  # not 200
    with pytest.raises(BrokerError) as refused:
        await jobs.get("alice", bobs.job.job_id)
    assert refused.value.code is ErrorCode.NOT_FOUND
