"""Submission through the real core: what is stored, audited and counted, and what a refusal
leaves behind (nothing queued, nothing kicked)."""

from __future__ import annotations

from typing import Any

import pytest

from broker.access.model import Quota
from broker.devices.model import OperatingState
from broker.errors import BrokerError, ErrorCode
from broker.jobs.model import JobState
from broker.jobs.submit import MAX_BATCH, SubmitRequest
from tests.unit.core.harness import (
    Core,
    amend_principal,
    audit_mark,
    audit_since,
    ghz,
    metric,
    request,
    stored_jobs,
)


async def _refused(core: Core, caller: str, *requests: SubmitRequest) -> BrokerError:
    with pytest.raises(BrokerError) as info:
        await core.parts.services.submission.submit_many(caller, list(requests))
    return info.value


def _nothing_queued(core: Core) -> None:
    assert stored_jobs(core) == []
    assert core.parts.registries.wakeups.take() is None
    assert core.parts.jobs.scheduler.depth("dev-open") == 0


async def test_a_submit_to_a_visible_device_is_stored_queued_audited_and_counted(
    core: Core,
) -> None:
    await core.register()
    mark = audit_mark(core)
    [(view, created)] = await core.parts.services.submission.submit_many("alice", [request()])
    assert created
    job = view.job
    assert (job.state, job.owner, job.device_id, job.project) == (
        JobState.QUEUED,
        "alice",
        "dev-open",
        "lab",
    )
    assert stored_jobs(core) == [job]
    [event] = audit_since(core, mark)
    assert (event.kind, event.actor, event.subject) == ("job.submitted", "alice", job.job_id)
    assert event.detail == {
        "device": "dev-open",
        "circuit_digest": job.circuit.digest,
        "shots": 100,
        "project": "lab",
    }
    assert metric(core, "qtestbed_jobs_total", device="dev-open", state="QUEUED") == 1
    assert core.parts.registries.wakeups.take() == "dev-open"
    assert view.queue_position == 1


async def test_a_hidden_device_and_an_absent_device_get_the_same_not_found(core: Core) -> None:
    await core.register("dev-r", tier="restricted")
    mark = audit_mark(core)
    hidden = await _refused(core, "alice", request("dev-r"))
    absent = await _refused(core, "alice", request("dev-ghost"))
    assert hidden.code is absent.code is ErrorCode.NOT_FOUND
    assert hidden.detail == "device 'dev-r' not found"
    assert hidden.detail.replace("dev-r", "X") == absent.detail.replace("dev-ghost", "X")
    assert hidden.rule_id == absent.rule_id == ""
    assert audit_since(core, mark) == []  # no clearance.denied that would set them apart
    assert stored_jobs(core) == []


async def test_a_restricted_researcher_may_submit_to_the_device_hidden_from_alice(
    core: Core,
) -> None:
    await core.register("dev-r", tier="restricted")
    [(view, created)] = await core.parts.services.submission.submit_many("bob", [request("dev-r")])
    assert created
    assert view.job.device_id == "dev-r"


async def test_a_clearance_denial_is_permission_denied_with_its_rule_audited_and_counted(
    core: Core,
) -> None:
    await core.register()
    mark = audit_mark(core)
    refused = await _refused(core, "alice", request(project="ops"))
    assert refused.code is ErrorCode.PERMISSION_DENIED
    assert refused.rule_id == "researcher-submit/project"
    assert refused.detail.startswith("denied by rule researcher-submit/project: ")
    assert "not a member of project 'ops'" in refused.detail
    [event] = audit_since(core, mark)
    assert (event.kind, event.actor) == ("clearance.denied", "alice")
    assert event.detail["stage"] == "submit"
    assert event.detail["rule"] == "researcher-submit/project"
    assert event.detail["device"] == "dev-open"
    rule = "researcher-submit/project"
    assert metric(core, "qtestbed_clearance_denials_total", rule=rule, stage="submit") == 1
    _nothing_queued(core)


async def test_a_draining_device_accepts_no_new_job(core: Core) -> None:
    await core.register()
    await core.parts.registries.schedule.set_state(
        "olivia", "dev-open", OperatingState.DRAINING, "firmware update tonight"
    )
    await core.pump()
    refused = await _refused(core, "alice", request())
    assert refused.code is ErrorCode.PERMISSION_DENIED
    assert refused.rule_id == "researcher-submit/state"
    assert "it is draining" in refused.detail
    _nothing_queued(core)


async def test_a_batch_with_one_refused_job_stores_none_and_names_its_place(core: Core) -> None:
    await core.register()
    mark = audit_mark(core)
    refused = await _refused(core, "alice", request(), request(project="ops"), request())
    assert refused.code is ErrorCode.PERMISSION_DENIED
    assert refused.rule_id == "researcher-submit/project"
    assert refused.detail.startswith(
        "job 2 of 3 (nothing in the batch was queued): denied by rule researcher-submit/project"
    )
    assert [e.kind for e in audit_since(core, mark)] == ["clearance.denied"]
    _nothing_queued(core)


async def test_a_batch_with_a_too_wide_circuit_last_stores_none(core: Core) -> None:
    await core.register(num_qubits=2)
    refused = await _refused(core, "alice", request(), request(), request(payload=ghz(3)))
    assert refused.code is ErrorCode.INVALID_ARGUMENT
    assert refused.detail.startswith("job 3 of 3 (nothing in the batch was queued): ")
    _nothing_queued(core)


async def test_a_whole_batch_is_stored_with_one_audit_entry_per_job(core: Core) -> None:
    await core.register()
    mark = audit_mark(core)
    batch = [request(shots=s) for s in (10, 20, 30)]
    stored = await core.parts.services.submission.submit_many("alice", batch)
    assert [created for _, created in stored] == [True, True, True]
    assert sorted(j.shots for j in stored_jobs(core)) == [10, 20, 30]
    assert [e.kind for e in audit_since(core, mark)] == ["job.submitted"] * 3
    assert core.parts.jobs.scheduler.depth("dev-open") == 3


async def test_an_empty_or_oversized_batch_is_invalid_argument(core: Core) -> None:
    await core.register()
    empty = await _refused(core, "alice")
    assert (empty.code, empty.detail) == (ErrorCode.INVALID_ARGUMENT, "the batch is empty")
    huge = await _refused(core, "alice", *[request()] * (MAX_BATCH + 1))
    assert huge.code is ErrorCode.INVALID_ARGUMENT
    assert f"at most {MAX_BATCH} jobs" in huge.detail
    _nothing_queued(core)


async def test_reusing_an_idempotency_key_returns_the_first_job_and_writes_nothing(
    core: Core,
) -> None:
    await core.register()
    submission = core.parts.services.submission
    [(first, created)] = await submission.submit_many("alice", [request(idempotency_key="k1")])
    assert created
    mark = audit_mark(core)
    core.clock.advance(30)
    [(again, created)] = await submission.submit_many("alice", [request(idempotency_key="k1")])
    assert not created
    assert again.job.job_id == first.job.job_id
    assert again.job.created_at == first.job.created_at
    assert stored_jobs(core) == [first.job]
    assert audit_since(core, mark) == []
    assert metric(core, "qtestbed_jobs_total", device="dev-open", state="QUEUED") == 1


@pytest.mark.parametrize(
    "changes",
    [{"shots": 7}, {"payload": ghz(3)}, {"device_id": "dev-other"}],
    ids=["shots", "circuit", "device"],
)
async def test_an_idempotency_key_reused_for_another_request_is_failed_precondition(
    core: Core, changes: dict[str, Any]
) -> None:
    await core.register()
    await core.register("dev-other")
    submission = core.parts.services.submission
    [(first, _)] = await submission.submit_many("alice", [request(idempotency_key="k1")])
    mark = audit_mark(core)
    refused = await _refused(core, "alice", request(idempotency_key="k1", **changes))
    assert refused.code is ErrorCode.FAILED_PRECONDITION
    assert f"idempotency key 'k1' was already used for job {first.job.job_id}" in refused.detail
    assert stored_jobs(core) == [first.job]
    assert audit_since(core, mark) == []


async def test_an_idempotency_key_belongs_to_its_owner(core: Core) -> None:
    await core.register()
    submission = core.parts.services.submission
    [(alices, _)] = await submission.submit_many("alice", [request(idempotency_key="k1")])
    [(bobs, created)] = await submission.submit_many("bob", [request(idempotency_key="k1")])
    assert created
    assert bobs.job.job_id != alices.job.job_id
    assert bobs.job.owner == "bob"


async def test_over_the_active_job_quota_is_resource_exhausted_and_stores_nothing(
    core: Core,
) -> None:
    await core.register()
    await amend_principal(core, "alice", quota=Quota(max_active_jobs=1))
    submission = core.parts.services.submission
    [(first, _)] = await submission.submit_many("alice", [request()])
    await core.pump()
    mark = audit_mark(core)
    refused = await _refused(core, "alice", request())
    assert refused.code is ErrorCode.RESOURCE_EXHAUSTED
    assert refused.rule_id == "quota.principal.active_jobs"
    assert "at most 1 active jobs (1 in use)" in refused.detail
    [event] = audit_since(core, mark)
    assert (event.kind, event.actor) == ("quota.exceeded", "alice")
    assert event.detail == {"scope": "principal", "name": "alice", "limit": "active_jobs", "max": 1}
    labels = {"scope": "principal", "limit": "active_jobs"}
    assert metric(core, "qtestbed_quota_rejections_total", **labels) == 1
    assert stored_jobs(core) == [first.job]
    assert core.parts.registries.wakeups.take() is None
    assert core.parts.jobs.scheduler.depth("dev-open") == 1


async def test_a_batch_that_would_pass_the_quota_midway_stores_none_of_it(core: Core) -> None:
    await core.register()
    await amend_principal(core, "alice", quota=Quota(max_active_jobs=2))
    await core.pump()  # an access change kicks every queue
    refused = await _refused(core, "alice", request(), request(), request())
    assert refused.code is ErrorCode.RESOURCE_EXHAUSTED
    assert refused.rule_id == "quota.principal.active_jobs"
    _nothing_queued(core)


async def test_a_circuit_wider_than_the_device_is_invalid_argument(core: Core) -> None:
    await core.register(num_qubits=2)
    mark = audit_mark(core)
    refused = await _refused(core, "alice", request(payload=ghz(3)))
    assert refused.code is ErrorCode.INVALID_ARGUMENT
    assert "circuit uses 3 qubits but device 'dev-open' has 2" in refused.detail
    assert metric(core, "qtestbed_submissions_rejected_total", field="circuit") == 1
    assert audit_since(core, mark) == []
    _nothing_queued(core)


async def test_a_request_naming_no_device_selector_or_session_is_invalid_argument(
    core: Core,
) -> None:
    refused = await _refused(core, "alice", request(""))
    assert refused.code is ErrorCode.INVALID_ARGUMENT
    assert "name a device (device_id)" in refused.detail
    assert stored_jobs(core) == []


async def test_an_unknown_priority_is_invalid_argument(core: Core) -> None:
    await core.register()
    refused = await _refused(core, "alice", request(priority=7))
    assert refused.code is ErrorCode.INVALID_ARGUMENT
    assert "priority must be LOW, NORMAL or HIGH" in refused.detail
    _nothing_queued(core)


async def test_an_unregistered_caller_is_unauthenticated(core: Core) -> None:
    await core.register()
    refused = await _refused(core, "mallory", request())
    assert refused.code is ErrorCode.UNAUTHENTICATED
    _nothing_queued(core)


async def test_a_batch_reusing_a_key_for_another_request_stores_none_of_it(core: Core) -> None:
    await core.register()
    submission = core.parts.services.submission
    [(first, _)] = await submission.submit_many("alice", [request(idempotency_key="k1")])
    refused = await _refused(
        core, "alice", request(idempotency_key="fresh"), request(idempotency_key="k1", shots=7)
    )
    assert stored_jobs(core) == [first.job]
    assert refused.code is ErrorCode.FAILED_PRECONDITION
    assert refused.detail.startswith("job 2 of 2 (nothing in the batch was queued): ")
