"""Admission of submissions on the core (fake clock, memory store): each limit refuses with
RESOURCE_EXHAUSTED and the delay after which a retry is admitted, while other principals go on;
refusals are counted by reason and audited in aggregate."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from broker.errors import BrokerError, ErrorCode
from tests.unit.core.harness import Core, amend_principal, events, metric, request, stored_jobs

SMALL = {"principal_burst": 100, "principal_jobs_per_second": 10.0}


async def _core(admission: Mapping[str, Any]) -> Core:
    core = await Core(admission=admission).start()
    await core.register()
    return core


@pytest.fixture
async def small() -> AsyncIterator[Core]:
    core = await _core(SMALL)
    try:
        yield core
    finally:
        core.close()


async def _submit(core: Core, caller: str, jobs: int = 1) -> None:
    submission = core.parts.services.submission
    await submission.submit_many(caller, [request() for _ in range(jobs)])


async def _refused(core: Core, caller: str, jobs: int = 1) -> BrokerError:
    with pytest.raises(BrokerError) as info:
        await _submit(core, caller, jobs)
    assert info.value.code is ErrorCode.RESOURCE_EXHAUSTED
    return info.value


def _refusals(core: Core, reason: str) -> float:
    return metric(core, "qtestbed_admission_refusals_total", reason=reason)


async def test_a_principal_past_its_bucket_waits_the_delay_given_while_others_go_on(
    small: Core,
) -> None:
    core = small
    await _submit(core, "alice", 100)  # a full batch: the whole burst
    refused = await _refused(core, "alice")
    assert refused.rule_id == "admission.principal_rate"
    assert refused.retry_after_seconds == pytest.approx(0.1)  # one job at 10 per second
    assert "submission rate limit for principal 'alice'" in refused.detail
    assert "retry in 0.1 s" in refused.detail
    # A batch needing more than has refilled waits for all of it.
    assert (await _refused(core, "alice", 50)).retry_after_seconds == pytest.approx(5.0)
    await _submit(core, "bob", 100)  # bob's bucket is his own
    assert refused.retry_after_seconds is not None
    core.clock.advance(refused.retry_after_seconds)
    await _submit(core, "alice")
    assert len(stored_jobs(core)) == 201  # the refused calls queued nothing
    assert _refusals(core, "principal_rate") == 2


async def test_the_facility_bucket_holds_every_principal_together() -> None:
    core = await _core({"facility_burst": 100, "facility_jobs_per_second": 10.0})
    try:
        await _submit(core, "alice", 100)
        refused = await _refused(core, "bob", 20)
        assert refused.rule_id == "admission.facility_rate"
        assert refused.retry_after_seconds == pytest.approx(2.0)
        assert refused.retry_after_seconds is not None
        core.clock.advance(refused.retry_after_seconds)
        await _submit(core, "bob", 20)
        assert _refusals(core, "facility_rate") == 1
        assert _refusals(core, "principal_rate") == 0
    finally:
        core.close()


async def test_a_full_principal_table_admits_a_newcomer_once_a_bucket_is_full_again() -> None:
    core = await _core({**SMALL, "max_tracked_principals": 1})
    try:
        await _submit(core, "alice", 5)
        refused = await _refused(core, "bob")
        assert refused.rule_id == "admission.overload"
        assert refused.retry_after_seconds == pytest.approx(0.5)  # alice's five tokens back
        assert refused.retry_after_seconds is not None
        core.clock.advance(refused.retry_after_seconds)
        await _submit(core, "bob")  # alice's full bucket made room
    finally:
        core.close()


async def test_submissions_are_shed_while_the_store_queue_is_at_its_bound() -> None:
    core = await _core({"max_store_queue": 4, "overload_retry_seconds": 2.0})
    try:
        running, release = threading.Event(), threading.Event()

        def hold() -> None:  # occupies the one store thread until released
            running.set()
            release.wait(30)

        held = asyncio.create_task(core.runner.call(hold))
        await asyncio.to_thread(running.wait, 30)
        waiting = [asyncio.create_task(core.runner.call(lambda: None)) for _ in range(3)]
        await asyncio.sleep(0)  # each call queued itself before its first await
        assert core.runner.depth == 4
        refused = await _refused(core, "alice")
        assert refused.rule_id == "admission.overload"
        assert refused.retry_after_seconds == 2.0
        assert "(4 store calls waiting, at most 4)" in refused.detail
        release.set()
        await asyncio.gather(held, *waiting)
        assert core.runner.depth == 0
        await _submit(core, "alice")
        assert _refusals(core, "overload") == 1
    finally:
        core.close()


async def test_refusals_are_audited_once_per_reason_and_principal_per_window(small: Core) -> None:
    core = small
    await _submit(core, "alice", 100)
    for _ in range(25):
        await _refused(core, "alice")
    await core.parts.jobs.admission.flush()
    assert events(core, "admission.refused") == []  # the window has not run its length
    core.clock.advance(60)
    await core.parts.jobs.admission.flush()
    [entry] = events(core, "admission.refused")
    assert entry.actor == "alice"
    assert entry.detail["reason"] == "principal_rate"
    assert entry.detail["count"] == 25


async def test_the_default_limits_admit_a_full_sweep_at_once(core: Core) -> None:
    await core.register()
    await _submit(core, "alice", 100)
    await _submit(core, "alice", 100)
    assert len(stored_jobs(core)) == 200
    assert sum(_refusals(core, r) for r in ("principal_rate", "facility_rate", "overload")) == 0


async def _device_bound_core(bound: int) -> Core:
    core = await _core({"max_queued_per_device": bound, "overload_retry_seconds": 2.0})
    await core.register("dev-restricted", tier="restricted")
    return core


async def test_a_device_at_its_queue_bound_refuses_only_its_own_work() -> None:
    core = await _device_bound_core(3)
    try:
        await _submit(core, "alice", 2)
        # A batch reaching past the bound is refused whole, naming the job that would not fit.
        refused = await _refused(core, "bob", 2)
        assert refused.rule_id == "admission.device_backlog"
        assert refused.retry_after_seconds == 2.0
        assert "job 2 of 2" in refused.detail
        assert "device 'dev-open' has 2 jobs queued and this call puts 1 more" in refused.detail
        assert "project 'lab' holds 3 of them" in refused.detail
        await _submit(core, "bob")  # the third fits
        refused = await _refused(core, "alice")
        assert (
            "has 3 jobs queued, at or past [admission] max_queued_per_device (3), and project "
            "'lab' holds 3 of them, its share of the bound among the 1 projects queued there (3)"
        ) in refused.detail
        # Another device's queue is its own: bob still queues there.
        submission = core.parts.services.submission
        await submission.submit_many("bob", [request("dev-restricted") for _ in range(3)])
        assert len(stored_jobs(core)) == 6  # refused calls queued nothing
        # The device takes more as its queue drains.
        [oldest, *_] = stored_jobs(core)
        await core.parts.services.jobs.cancel("alice", oldest.job_id, "making room")
        await _submit(core, "alice")
        assert _refusals(core, "device_backlog") == 2
        assert _refusals(core, "facility_rate") == 0
    finally:
        core.close()


async def test_past_the_bound_another_project_still_queues_its_share() -> None:
    """One project filling a device does not lock the others out of it: each project may hold
    its weighted share of the bound among the projects queued there."""
    core = await _device_bound_core(4)
    try:
        await amend_principal(core, "bob", projects=("ops",))
        await _submit(core, "alice", 4)  # project lab fills the device
        assert "project 'lab' holds 4" in (await _refused(core, "alice")).detail
        await _submit(core, "bob", 2)  # ops' share with lab queued: 4 x 1 / 2
        refused = await _refused(core, "bob")
        assert "project 'ops' holds 2 of them" in refused.detail
        assert "among the 2 projects queued there (2)" in refused.detail
        assert (await _refused(core, "alice")).rule_id == "admission.device_backlog"
        assert len(stored_jobs(core)) == 6
    finally:
        core.close()


async def test_a_hidden_device_at_its_bound_answers_as_an_absent_one() -> None:
    core = await _device_bound_core(1)
    try:
        submission = core.parts.services.submission
        await submission.submit_many("bob", [request("dev-restricted")])
        answers = []
        for device in ("dev-restricted", "dev-nowhere"):  # hidden from alice, and absent
            with pytest.raises(BrokerError) as info:
                await submission.submit_many("alice", [request(device)])
            answers.append((info.value.code, info.value.detail.replace(device, "{id}")))
        assert answers[0] == answers[1]
        assert answers[0][0] is ErrorCode.NOT_FOUND
        assert _refusals(core, "device_backlog") == 0
    finally:
        core.close()
