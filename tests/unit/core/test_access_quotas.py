"""Quotas: limits on principals and projects, checked by the store with each job insert, over a
rolling day the fake clock walks through; and what a researcher sees of them."""

from __future__ import annotations

import pytest

from broker.access.model import DAY_SECONDS, Project, Quota, RecordKind
from broker.errors import BrokerError, ErrorCode
from broker.jobs.model import Job
from tests.unit.core.harness import (
    Core,
    amend_principal,
    audit_mark,
    audit_since,
    metric,
    request,
    stored_jobs,
)


async def _limit_lab(core: Core, quota: Quota) -> None:
    access = core.parts.registries.access
    version = core.parts.registries.records.version(RecordKind.PROJECT, "lab")
    await access.put_project("olivia", Project(name="lab", quota=quota), version)


async def _submit(core: Core, caller: str = "alice", shots: int = 100) -> Job:
    submission = core.parts.services.submission
    [(view, _)] = await submission.submit_many(caller, [request(shots=shots)])
    return view.job


async def _refused(core: Core, caller: str = "alice", shots: int = 100) -> BrokerError:
    with pytest.raises(BrokerError) as info:
        await _submit(core, caller, shots)
    return info.value


@pytest.fixture
async def device(core: Core) -> Core:
    await core.register()
    return core


def test_no_check_is_asked_of_the_store_when_nothing_is_limited(core: Core) -> None:
    alice = core.parts.registries.access.principal("alice")
    assert alice is not None
    assert core.parts.registries.quotas.check(alice, "lab", core.clock.now()) is None


async def test_a_project_shot_quota_counts_every_member_over_a_rolling_day(device: Core) -> None:
    core = device
    await _limit_lab(core, Quota(max_shots_per_day=150))
    await _submit(core, "alice", shots=100)
    mark = audit_mark(core)
    refused = await _refused(core, "bob", shots=100)  # bob is in lab too
    assert refused.code is ErrorCode.RESOURCE_EXHAUSTED
    assert refused.rule_id == "quota.project.shots_per_day"
    assert "at most 150 shots per 24 hours (100 in use)" in refused.detail
    assert "50 shots remain in the rolling 24 hours" in refused.detail
    [event] = audit_since(core, mark)
    assert event.detail == {"scope": "project", "name": "lab", "limit": "shots_per_day", "max": 150}
    labels = {"scope": "project", "limit": "shots_per_day"}
    assert metric(core, "qtestbed_quota_rejections_total", **labels) == 1
    assert len(stored_jobs(core)) == 1
    await _submit(core, "bob", shots=50)  # exactly at the limit is allowed
    core.clock.advance(DAY_SECONDS)  # a job exactly a day old still counts
    assert (await _refused(core, "bob", shots=150)).rule_id == "quota.project.shots_per_day"
    core.clock.advance(1)  # now the first 150 shots have left the rolling day
    await _submit(core, "bob", shots=150)
    assert len(stored_jobs(core)) == 3


async def test_cancelling_a_job_frees_its_active_job_slot(device: Core) -> None:
    core = device
    await amend_principal(core, "alice", quota=Quota(max_active_jobs=1))
    first = await _submit(core)
    assert (await _refused(core)).rule_id == "quota.principal.active_jobs"
    await core.parts.services.jobs.cancel("alice", first.job_id, "")
    second = await _submit(core)
    assert second.job_id != first.job_id


async def test_a_principal_quota_does_not_limit_other_members(device: Core) -> None:
    core = device
    await amend_principal(core, "alice", quota=Quota(max_active_jobs=1))
    await _submit(core, "alice")
    await _submit(core, "bob")
    await _submit(core, "bob")
    assert len(stored_jobs(core)) == 3


async def test_a_replayed_submission_at_the_quota_returns_the_stored_job(device: Core) -> None:
    core = device
    await amend_principal(core, "alice", quota=Quota(max_active_jobs=1))
    submission = core.parts.services.submission
    keyed = request(idempotency_key="k1")
    [(first, _)] = await submission.submit_many("alice", [keyed])
    [(again, created)] = await submission.submit_many("alice", [keyed])
    assert (again.job.job_id, created) == (first.job.job_id, False)


async def test_a_researcher_sees_their_quotas_with_usage(device: Core) -> None:
    core = device
    await amend_principal(core, "alice", quota=Quota(max_active_jobs=4))
    await _limit_lab(core, Quota(max_shots_per_day=1000))
    await _submit(core, "alice", shots=100)
    await _submit(core, "bob", shots=300)
    mine, project = await core.parts.services.jobs.quota("alice", "")
    assert (mine.scope, mine.name, mine.max_active_jobs) == ("principal", "alice", 4)
    assert (mine.usage.active_jobs, mine.usage.shots_last_day) == (1, 100)
    assert (project.scope, project.name, project.max_shots_per_day) == ("project", "lab", 1000)
    assert (project.usage.active_jobs, project.usage.shots_last_day) == (2, 400)


async def test_a_researcher_cannot_read_a_project_they_are_not_in(device: Core) -> None:
    with pytest.raises(BrokerError) as info:
        await device.parts.services.jobs.quota("alice", "ops")
    assert (info.value.code, info.value.detail) == (ErrorCode.NOT_FOUND, "project 'ops' not found")
