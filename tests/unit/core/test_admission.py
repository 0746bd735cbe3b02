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


async def _device_bound_core(bound: int = 100) -> Core:
    core = await _core({"max_queued_per_device": bound, "overload_retry_seconds": 2.0})
    await core.register("dev-restricted", tier="restricted")
    return core


async def _queue(core: Core, caller: str, jobs: int, device: str = "dev-open") -> None:
    await core.parts.services.submission.submit_many(caller, [request(device)] * jobs)


async def test_a_device_at_its_queue_bound_refuses_only_its_own_work() -> None:
    core = await _device_bound_core()
    try:
        await _queue(core, "alice", 60)
        # A batch reaching past the bound is refused whole, naming the job that would not fit.
        refused = await _refused(core, "bob", 50)
        assert refused.rule_id == "admission.device_backlog"
        assert refused.retry_after_seconds == 2.0
        assert "job 41 of 50" in refused.detail
        assert "device 'dev-open' has 100 jobs queued or being submitted" in refused.detail
        assert "project 'lab' has 100 of them, its share of the bound" in refused.detail
        await _queue(core, "bob", 40)  # these fit
        assert "max_queued_per_device (100)" in (await _refused(core, "alice")).detail
        # Another device's queue is its own: bob still queues there.
        await _queue(core, "bob", 3, "dev-restricted")
        assert len(stored_jobs(core)) == 103  # refused calls queued nothing
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
    core = await _device_bound_core()
    try:
        await amend_principal(core, "bob", projects=("ops",))
        await _queue(core, "alice", 100)  # project lab fills the device
        assert "project 'lab' has 100" in (await _refused(core, "alice")).detail
        await _queue(core, "bob", 50)  # ops' share with lab queued: 100 x 1 / 2
        refused = await _refused(core, "bob")
        assert "has 150 jobs queued" in refused.detail
        assert "project 'ops' has 50 of them" in refused.detail
        assert (await _refused(core, "alice")).rule_id == "admission.device_backlog"
        assert len(stored_jobs(core)) == 150
    finally:
        core.close()


async def test_concurrent_calls_decide_on_the_jobs_on_their_way_too() -> None:
    """Calls in flight together (each parsing its circuits off the event loop) cannot all pass
    the bound on the same queue depth: the places held for calls not yet stored count."""
    core = await _device_bound_core()
    try:
        await _queue(core, "alice", 90)
        # alice's and bob's (both project lab) interleave: each checks a job, then parses it.
        calls = [_queue(core, "alice", 10), _queue(core, "bob", 10)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        refusals = [r for r in results if isinstance(r, BrokerError)]
        assert refusals, results  # deciding on the store alone let both through: 110 queued
        assert {r.rule_id for r in refusals} == {"admission.device_backlog"}
        assert len(stored_jobs(core)) <= 100
    finally:
        core.close()


async def test_the_bound_says_nothing_about_a_project_the_caller_is_not_in() -> None:
    """Naming another project on a full device gets the clearance refusal it would get without
    a bound, never that project's count or share."""
    core = await _device_bound_core()
    try:
        await amend_principal(core, "bob", projects=("ops",))
        await _queue(core, "bob", 100)
        with pytest.raises(BrokerError) as info:
            await core.parts.services.submission.submit_many(
                "alice", [request("dev-open", project="ops")]
            )
        assert info.value.code is ErrorCode.PERMISSION_DENIED
        assert "ops" not in info.value.detail or "100" not in info.value.detail
        assert _refusals(core, "device_backlog") == 0
    finally:
        core.close()


async def test_a_hidden_device_at_its_bound_answers_as_an_absent_one() -> None:
    core = await _device_bound_core()
    try:
        submission = core.parts.services.submission
        await _queue(core, "bob", 100, "dev-restricted")
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


async def test_a_retry_of_a_stored_job_is_answered_while_the_device_is_full() -> None:
    """The bound limits new jobs: a client whose answer was lost retries with the same key and
    gets its job back even at the bound, while a new key, or the same key for a different
    request, is still refused."""
    core = await _device_bound_core()
    try:
        submission = core.parts.services.submission
        keyed = request(idempotency_key="lost-answer")
        [(first, created)] = await submission.submit_many("alice", [keyed])
        assert created
        await _queue(core, "alice", 99)
        [(again, created)] = await submission.submit_many("alice", [keyed])
        assert (again.job.job_id, created) == (first.job.job_id, False)
        fresh = request(idempotency_key="new-job")
        with pytest.raises(BrokerError) as info:
            await submission.submit_many("alice", [fresh])
        assert info.value.rule_id == "admission.device_backlog"
        # Another principal's key is not alice's: bob's retry of "lost-answer" is a new job.
        with pytest.raises(BrokerError) as info:
            await submission.submit_many("bob", [keyed])
        assert info.value.rule_id == "admission.device_backlog"
        with pytest.raises(BrokerError) as info:
            await submission.submit_many("alice", [request(shots=7, idempotency_key="lost-answer")])
        assert info.value.code is ErrorCode.FAILED_PRECONDITION  # same key, another request
        assert len(stored_jobs(core)) == 100
        assert _refusals(core, "device_backlog") == 2
    finally:
        core.close()
