"""Just-in-time access: filing rules, a second principal to decide, break-glass by two security
principals, revocation, and grants that expire by themselves (the next dispatch is DENIED).
Each step is audited; each refusal counted by rule."""

from __future__ import annotations

import dataclasses

import pytest

from broker.access.grants import Effective
from broker.access.model import (
    PENDING_SECONDS,
    AccessRequest,
    Elevation,
    RecordKind,
    RequestState,
    Role,
)
from broker.access.requests import MAX_PENDING, Filing
from broker.errors import BrokerError, ErrorCode
from broker.jobs.model import JobState
from broker.link import messages as m
from tests.unit.core.harness import (
    Core,
    audit_mark,
    audit_since,
    events,
    granted,
    job_of,
    metric,
    only,
    queued,
    request,
)

DAY = 86_400.0


def _filing(
    kind: Elevation = Elevation.TIER, value: str = "controlled", **changes: object
) -> Filing:
    base = Filing(
        principal="", kind=kind, value=value, duration_seconds=DAY, reason="run the survey"
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


async def _file(core: Core, caller: str, filing: Filing) -> AccessRequest:
    return await core.parts.registries.requests.file(caller, filing)


async def _refused(core: Core, call: object) -> BrokerError:
    with pytest.raises(BrokerError) as info:
        await call  # type: ignore[misc]
    return info.value


def _effective(core: Core, name: str) -> Effective:
    found = core.parts.registries.grants.effective(name)
    assert found is not None, name
    return found


def _tier(core: Core, name: str) -> str:
    return _effective(core, name).principal.tier


def _refusals(core: Core, rule: str) -> float:
    return metric(core, "qtestbed_access_refusals_total", rule=rule)


# --- filing --------------------------------------------------------------------------------------


async def test_a_request_is_filed_pending_and_audited(core: Core) -> None:
    mark = audit_mark(core)
    filed = await _file(core, "alice", _filing())
    assert (filed.state, filed.principal, filed.requested_by) == (
        RequestState.PENDING,
        "alice",
        "alice",
    )
    assert _tier(core, "alice") == "open"  # nothing counts before approval
    [event] = audit_since(core, mark)
    assert (event.kind, event.actor, event.subject) == ("access.request.created", "alice", "alice")
    assert event.detail["request"] == filed.request_id
    assert core.parts.registries.requests.list("alice") == [filed]


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"reason": " "}, "say why"),
        ({"duration_seconds": 91 * DAY}, "at most 90 day(s)"),
        ({"duration_seconds": 0.0}, "more than 0"),
        ({"break_glass": True, "duration_seconds": 2 * DAY}, "at most 1 day(s)"),
        ({"value": "secret"}, "tier 'secret' is not one of open, controlled, restricted"),
        (
            {"kind": Elevation.ROLE, "value": "researcher"},
            "one of approver, operator, scraper, security",
        ),
    ],
    ids=["reason", "90-days", "zero", "break-glass-day", "tier", "role"],
)
async def test_a_malformed_request_is_invalid_argument(
    core: Core, changes: dict[str, object], says: str
) -> None:
    filing = dataclasses.replace(_filing(), **changes)  # type: ignore[arg-type]
    refused = await _refused(core, _file(core, "alice", filing))
    assert refused.code is ErrorCode.INVALID_ARGUMENT
    assert says in refused.detail
    assert core.parts.registries.requests.list("petra") == []


async def test_only_staff_file_for_someone_else(core: Core) -> None:
    mark = audit_mark(core)
    refused = await _refused(
        core, _file(core, "alice", _filing(principal="bob", value="restricted"))
    )
    assert (refused.code, refused.rule_id) == (ErrorCode.PERMISSION_DENIED, "access.file-for-other")
    assert _refusals(core, "access.file-for-other") == 1
    assert audit_since(core, mark) == []  # tallied: audited in aggregate on the tick
    await core.parts.registries.refusals.flush(force=True)
    [event] = audit_since(core, mark)
    assert (event.kind, event.actor) == ("access.request.refused", "alice")
    assert (event.detail["rule"], event.detail["count"]) == ("access.file-for-other", 1)
    filed = await _file(core, "petra", _filing(principal="alice"))
    assert (filed.principal, filed.requested_by) == ("alice", "petra")


async def test_a_request_for_what_the_record_holds_is_refused(core: Core) -> None:
    refused = await _refused(core, _file(core, "bob", _filing(value="controlled")))
    assert refused.rule_id == "access.not-elevation"
    await core.register("dev-open", tier="open")
    refused = await _refused(core, _file(core, "alice", _filing(Elevation.DEVICE, "dev-open")))
    assert refused.rule_id == "access.not-elevation"


async def test_a_duplicate_of_a_pending_request_is_refused(core: Core) -> None:
    await _file(core, "alice", _filing())
    refused = await _refused(core, _file(core, "alice", _filing(reason="again")))
    assert (refused.code, refused.rule_id) == (ErrorCode.FAILED_PRECONDITION, "access.duplicate")


async def test_pending_requests_per_requester_are_bounded(core: Core) -> None:
    for n in range(MAX_PENDING):
        await _file(core, "alice", _filing(Elevation.LICENCE, f"LIC-{n}"))
    refused = await _refused(core, _file(core, "alice", _filing(Elevation.LICENCE, "LIC-X")))
    assert (refused.code, refused.rule_id) == (ErrorCode.RESOURCE_EXHAUSTED, "access.pending-limit")
    assert len(core.parts.registries.requests.list("alice")) == MAX_PENDING


async def test_a_hidden_device_and_an_absent_one_get_the_same_answer(core: Core) -> None:
    await core.register("dev-r", tier="restricted")  # hidden from alice (open)
    hidden = await _file(core, "alice", _filing(Elevation.DEVICE, "dev-r"))
    absent = await _file(core, "alice", _filing(Elevation.DEVICE, "dev-none"))
    assert (hidden.state, absent.state) == (RequestState.PENDING, RequestState.PENDING)
    assert dataclasses.replace(hidden, request_id="x", value="d") == dataclasses.replace(
        absent, request_id="x", value="d"
    )
    # Only the approver learns that one of them names no device.
    requests = core.parts.registries.requests
    refused = await _refused(core, requests.approve("petra", absent.request_id, "ok"))
    assert refused.code is ErrorCode.FAILED_PRECONDITION
    assert "'dev-none' is not registered" in refused.detail
    assert (await requests.approve("petra", hidden.request_id, "ok")).state is RequestState.GRANTED


# --- deciding ------------------------------------------------------------------------------------


async def test_an_approval_by_a_second_principal_grants_for_the_duration(core: Core) -> None:
    filed = await _file(core, "alice", _filing())
    core.clock.advance(30)
    mark = audit_mark(core)
    grant = await core.parts.registries.requests.approve("petra", filed.request_id, "ok")
    assert grant.state is RequestState.GRANTED
    assert grant.expires_at == core.clock.now() + DAY
    assert _tier(core, "alice") == "controlled"
    record = core.parts.registries.access.principal("alice")
    assert record is not None
    assert record.tier == "open"  # the record itself is unchanged
    [event] = audit_since(core, mark)
    assert (event.kind, event.actor, event.subject) == ("access.request.granted", "petra", "alice")


async def test_nobody_decides_their_own_request(core: Core) -> None:
    requests = core.parts.registries.requests
    mine = await _file(core, "sam", _filing(Elevation.ROLE, "operator"))
    filed_by_petra = await _file(core, "petra", _filing(principal="alice"))
    mark = audit_mark(core)
    for decider, filed in (("sam", mine), ("petra", filed_by_petra)):
        for decide in (requests.approve, requests.deny):
            refused = await _refused(core, decide(decider, filed.request_id, "no"))
            assert (refused.code, refused.rule_id) == (
                ErrorCode.PERMISSION_DENIED,
                "access.own-request",
            )
    assert [e.kind for e in audit_since(core, mark)] == ["access.decision.refused"] * 4
    assert _refusals(core, "access.own-request") == 4
    assert {r.state for r in requests.list("sam")} == {RequestState.PENDING}


async def test_only_approvers_and_security_decide(core: Core) -> None:
    filed = await _file(core, "alice", _filing())
    refused = await _refused(
        core, core.parts.registries.requests.approve("olivia", filed.request_id, "ok")
    )
    assert refused.rule_id == "access.decider-role"
    assert _tier(core, "alice") == "open"
    grant = await core.parts.registries.requests.approve("sam", filed.request_id, "ok")
    assert grant.state is RequestState.GRANTED


async def test_a_denial_needs_a_reason_and_closes_the_request(core: Core) -> None:
    requests = core.parts.registries.requests
    filed = await _file(core, "alice", _filing())
    refused = await _refused(core, requests.deny("petra", filed.request_id, ""))
    assert refused.code is ErrorCode.INVALID_ARGUMENT
    mark = audit_mark(core)
    denied = await requests.deny("petra", filed.request_id, "not this quarter")
    assert (denied.state, denied.decision_reason) == (RequestState.DENIED, "not this quarter")
    assert [e.kind for e in audit_since(core, mark)] == ["access.request.denied"]
    refused = await _refused(core, requests.approve("sam", filed.request_id, "ok"))
    assert refused.code is ErrorCode.FAILED_PRECONDITION
    assert requests.list("alice") == []
    assert requests.list("alice", include_closed=True) == [denied]


async def test_break_glass_needs_two_different_security_principals(core: Core) -> None:
    requests = core.parts.registries.requests
    filed = await _file(core, "alice", _filing(value="restricted", break_glass=True))
    refused = await _refused(core, requests.approve("petra", filed.request_id, "ok"))
    assert refused.rule_id == "access.break-glass"  # an approver is not enough
    mark = audit_mark(core)
    first = await requests.approve("sam", filed.request_id, "incident 42")
    assert first.state is RequestState.PENDING
    assert _tier(core, "alice") == "open"
    refused = await _refused(core, requests.approve("sam", filed.request_id, "again"))
    assert refused.rule_id == "access.break-glass"
    core.clock.advance(120)
    grant = await requests.approve("sue", filed.request_id, "confirmed")
    assert grant.state is RequestState.GRANTED
    assert [a.approver for a in grant.approvals] == ["sam", "sue"]
    assert grant.expires_at == core.clock.now() + DAY  # from the last required approval
    assert _tier(core, "alice") == "restricted"
    kinds = [e.kind for e in audit_since(core, mark)]
    assert kinds == ["access.request.approved", "access.decision.refused", "access.request.granted"]


async def test_a_revoked_grant_stops_counting_at_once(core: Core) -> None:
    requests = core.parts.registries.requests
    grant = await granted(core, "alice", Elevation.ROLE, "security")
    assert Role.SECURITY in _effective(core, "alice").principal.roles
    refused = await _refused(core, requests.revoke("bob", grant.request_id, "no"))
    assert refused.rule_id == "access.revoker-role"
    mark = audit_mark(core)
    revoked = await requests.revoke("olivia", grant.request_id, "incident closed")
    assert revoked.state is RequestState.REVOKED
    assert Role.SECURITY not in _effective(core, "alice").principal.roles
    assert [e.kind for e in audit_since(core, mark)] == ["access.request.revoked"]


# --- expiry --------------------------------------------------------------------------------------


async def test_an_expired_device_grant_denies_the_next_dispatch(core: Core) -> None:
    await core.register("dev-r", tier="restricted")
    grant = await granted(core, "alice", Elevation.DEVICE, "dev-r", seconds=60)
    job_id = await queued(core, "alice", request("dev-r"))  # allowed by the grant
    core.clock.advance(59)
    assert _effective(core, "alice").granted_devices == {"dev-r"}
    core.clock.advance(1)
    # At its own time the grant stops counting, before any tick has written it.
    assert _effective(core, "alice").granted_devices == frozenset()
    mark = audit_mark(core)
    await core.parts.registries.requests.expire_due()
    [event] = audit_since(core, mark)
    assert (event.kind, event.actor, event.subject) == ("access.request.expired", "broker", "alice")
    assert event.detail["request"] == grant.request_id
    stored = core.parts.registries.records.snapshot.requests[grant.request_id]
    assert stored.state is RequestState.EXPIRED
    await core.parts.registries.requests.expire_due()  # written once
    assert len(events(core, "access.request.expired")) == 1
    driver = core.driver("dev-r")
    assert (await driver.attest()).affirming
    await core.pump()
    job = await job_of(core, job_id)
    assert (job.state, job.rule_id) == (JobState.DENIED, "researcher-dispatch/tier")
    assert only(driver.heard(), m.LeaseGrant) == []


async def test_a_request_left_undecided_lapses_and_is_written_expired(core: Core) -> None:
    requests = core.parts.registries.requests
    for n in range(MAX_PENDING):
        await _file(core, "alice", _filing(Elevation.LICENCE, f"LIC-{n}"))
    stale = requests.list("alice")[0]
    core.clock.advance(PENDING_SECONDS - 1)
    assert (await _refused(core, _file(core, "alice", _filing()))).code is (
        ErrorCode.RESOURCE_EXHAUSTED
    )
    core.clock.advance(1)
    # At its own time it can no longer be decided, nor counts against the requester.
    refused = await _refused(core, requests.approve("petra", stale.request_id, "fine"))
    assert refused.code is ErrorCode.FAILED_PRECONDITION
    assert "waited undecided past its 14 days and has lapsed" in refused.detail
    fresh = await _file(core, "alice", _filing())
    mark = audit_mark(core)
    await requests.expire_due()
    lapsed = [e for e in audit_since(core, mark) if e.kind == "access.request.expired"]
    assert len(lapsed) == MAX_PENDING
    stored = core.parts.registries.records.snapshot.requests
    assert stored[stale.request_id].state is RequestState.EXPIRED
    assert stored[stale.request_id].decision_reason == "not decided within 14 days"
    assert stored[fresh.request_id].state is RequestState.PENDING
    granted_now = await requests.approve("petra", fresh.request_id, "fine")
    assert granted_now.state is RequestState.GRANTED
    await requests.expire_due()  # written once
    assert len(events(core, "access.request.expired")) == MAX_PENDING


# --- removal -------------------------------------------------------------------------------------


async def test_a_principal_with_open_grants_is_not_removed(core: Core) -> None:
    """Grants are kept by name: removing alice with one open would hand it to the next alice."""
    access = core.parts.registries.access
    requests = core.parts.registries.requests
    grant = await granted(core, "alice", Elevation.TIER, "controlled")
    version = core.parts.registries.records.version(RecordKind.PRINCIPAL, "alice")
    refused = await _refused(core, access.delete_principal("olivia", "alice", version))
    assert refused.code is ErrorCode.FAILED_PRECONDITION
    assert grant.request_id in refused.detail
    await requests.revoke("olivia", grant.request_id, "leaving the facility")
    await access.delete_principal("olivia", "alice", version)
    assert core.parts.registries.grants.effective("alice") is None
