"""Sessions through the real core: an open session holds its device for its owner's jobs, only
one is open per device, and it closes when idle past its timeout or at its maximum length
(the fake clock moves; `expire` is what the broker's tick runs)."""

from __future__ import annotations

import pytest

from broker.errors import BrokerError, ErrorCode
from broker.jobs.model import Job
from broker.jobs.session_model import Session, SessionState
from tests.unit.core.harness import (
    Core,
    attested,
    audit_mark,
    audit_since,
    request,
    stored_jobs,
)

IDLE = 300.0  # SchedulerSettings.session_idle_seconds, the harness's default
LONGEST = 3600.0  # SchedulerSettings.session_max_seconds


async def _open(core: Core, caller: str = "alice", max_seconds: float = 0) -> Session:
    return await core.parts.services.sessions.open(caller, "dev-open", "", max_seconds)


async def _in_session(core: Core, session: Session) -> Job:
    submission = core.parts.services.submission
    [(view, _)] = await submission.submit_many(
        session.owner, [request("", session_id=session.session_id)]
    )
    return view.job


async def _closed(core: Core, session: Session) -> Session:
    stored = await core.parts.services.sessions.get("olivia", session.session_id)
    assert stored.state is SessionState.CLOSED
    return stored


async def test_opening_a_session_holds_the_device_and_is_audited(core: Core) -> None:
    await core.register()
    mark = audit_mark(core)
    session = await _open(core)
    now = core.clock.now()
    assert (session.owner, session.device_id, session.project) == ("alice", "dev-open", "lab")
    assert (session.state, session.closes_at) == (SessionState.OPEN, now + LONGEST)
    assert core.parts.jobs.sessions.active("dev-open") == session
    [event] = audit_since(core, mark)
    assert (event.kind, event.actor, event.subject) == (
        "session.opened",
        "alice",
        session.session_id,
    )
    assert event.detail == {"device": "dev-open", "project": "lab", "max_seconds": LONGEST}
    assert core.parts.registries.wakeups.take() == "dev-open"


async def test_another_principals_job_waits_for_the_session_and_says_so(core: Core) -> None:
    driver = await attested(core)
    await _open(core, "alice")
    [(bobs, _)] = await core.parts.services.submission.submit_many("bob", [request()])
    assert bobs.waiting_for.startswith("device dev-open is held by a session until at most ")
    await core.pump()
    assert driver.grants() == []


async def test_the_sessions_own_jobs_run_while_it_holds_the_device(core: Core) -> None:
    driver = await attested(core)
    session = await _open(core, "alice")
    await core.parts.services.submission.submit_many("bob", [request()])
    job = await _in_session(core, session)
    assert (job.device_id, job.session_id, job.project) == ("dev-open", session.session_id, "lab")
    await core.pump()
    assert [g.job_id for g in driver.grants()] == [job.job_id]


async def test_closing_the_session_lets_the_waiting_job_run(core: Core) -> None:
    driver = await attested(core)
    session = await _open(core, "alice")
    [(bobs, _)] = await core.parts.services.submission.submit_many("bob", [request()])
    await core.pump()
    mark = audit_mark(core)
    closed = await core.parts.services.sessions.close("alice", session.session_id, "")
    assert (closed.state, closed.closed_reason) == (SessionState.CLOSED, "closed by its owner")
    [event] = audit_since(core, mark)
    assert (event.kind, event.actor, event.subject) == (
        "session.closed",
        "alice",
        session.session_id,
    )
    await core.pump()
    assert [g.job_id for g in driver.grants()] == [bobs.job.job_id]


async def test_a_second_session_on_the_same_device_is_failed_precondition(core: Core) -> None:
    await core.register()
    held = await _open(core, "alice")
    mark = audit_mark(core)
    for caller in ("bob", "alice"):
        with pytest.raises(BrokerError) as info:
            await _open(core, caller)
        assert info.value.code is ErrorCode.FAILED_PRECONDITION
        assert info.value.detail.startswith("device dev-open is held by another session until ")
    assert audit_since(core, mark) == []
    assert core.parts.jobs.sessions.active("dev-open") == held


async def test_a_session_closes_when_idle_past_its_timeout(core: Core) -> None:
    await core.register()
    session = await _open(core)
    await core.pump()
    sessions = core.parts.jobs.sessions
    core.clock.advance(IDLE - 1)
    await sessions.expire()
    assert sessions.active("dev-open") == session
    mark = audit_mark(core)
    core.clock.advance(1)
    await sessions.expire()
    assert sessions.active("dev-open") is None
    closed = await _closed(core, session)
    assert closed.closed_reason == "idle for longer than its timeout"
    assert closed.closed_at == core.clock.now()
    [event] = audit_since(core, mark)
    assert (event.kind, event.actor, event.subject) == (
        "session.closed",
        "broker",
        session.session_id,
    )
    assert event.detail == {
        "device": "dev-open",
        "reason": "idle for longer than its timeout",
        "jobs": 0,
    }
    assert core.parts.registries.wakeups.take() == "dev-open"  # the held queue may move


async def test_a_session_with_a_waiting_job_is_not_idle_but_closes_at_its_maximum_length(
    core: Core,
) -> None:
    await core.register()  # no driver: the session's job waits
    session = await _open(core)
    await _in_session(core, session)
    sessions = core.parts.jobs.sessions
    core.clock.advance(IDLE * 2)
    await sessions.expire()
    assert sessions.active("dev-open") is not None
    mark = audit_mark(core)
    core.clock.advance(LONGEST - IDLE * 2)
    await sessions.expire()
    assert sessions.active("dev-open") is None
    assert (await _closed(core, session)).closed_reason == "reached its maximum length"
    [event] = audit_since(core, mark)
    assert event.kind == "session.closed"
    assert event.detail["jobs"] == 1


async def test_a_shorter_maximum_closes_the_session_before_it_is_idle(core: Core) -> None:
    await core.register()
    session = await _open(core, max_seconds=60)
    assert session.closes_at == core.clock.now() + 60
    core.clock.advance(59)
    await core.parts.jobs.sessions.expire()
    assert core.parts.jobs.sessions.active("dev-open") is not None
    core.clock.advance(1)
    await core.parts.jobs.sessions.expire()
    assert (await _closed(core, session)).closed_reason == "reached its maximum length"


async def test_a_longer_maximum_than_the_facility_allows_is_cut_to_it(core: Core) -> None:
    await core.register()
    session = await _open(core, max_seconds=LONGEST * 10)
    assert session.closes_at == core.clock.now() + LONGEST


async def test_a_job_submitted_into_a_closed_session_is_not_found(core: Core) -> None:
    await core.register()
    session = await _open(core)
    await core.parts.services.sessions.close("alice", session.session_id, "")
    with pytest.raises(BrokerError) as info:
        await _in_session(core, session)
    assert info.value.code is ErrorCode.NOT_FOUND
    assert "no longer open" in info.value.detail
    assert stored_jobs(core) == []


async def test_nobody_else_can_submit_into_read_or_close_a_researchers_session(
    core: Core,
) -> None:
    await core.register()
    session = await _open(core, "alice")
    borrowed = request("", session_id=session.session_id)
    with pytest.raises(BrokerError) as submitted:
        await core.parts.services.submission.submit_many("bob", [borrowed])
    assert submitted.value.code is ErrorCode.NOT_FOUND
    service = core.parts.services.sessions
    for call in (service.get, lambda c, s: service.close(c, s, "")):
        with pytest.raises(BrokerError) as info:
            await call("bob", session.session_id)
        assert info.value.code is ErrorCode.NOT_FOUND
        assert info.value.detail == f"session {session.session_id!r} not found"
    assert stored_jobs(core) == []
    assert core.parts.jobs.sessions.active("dev-open") == session


async def test_an_operator_closes_any_session_and_is_named(core: Core) -> None:
    await core.register()
    session = await _open(core, "alice")
    mark = audit_mark(core)
    closed = await core.parts.services.sessions.close("olivia", session.session_id, "")
    assert closed.closed_reason == "closed by operator olivia"
    [event] = audit_since(core, mark)
    assert (event.kind, event.actor) == ("session.closed", "olivia")


async def test_opening_a_session_is_decided_like_a_submission(core: Core) -> None:
    await core.register()
    await core.register("dev-r", tier="restricted")
    sessions = core.parts.services.sessions
    mark = audit_mark(core)
    with pytest.raises(BrokerError) as hidden:
        await sessions.open("alice", "dev-r", "", 0)
    assert (hidden.value.code, hidden.value.detail) == (
        ErrorCode.NOT_FOUND,
        "device 'dev-r' not found",
    )
    with pytest.raises(BrokerError) as denied:
        await sessions.open("alice", "dev-open", "ops", 0)
    assert denied.value.code is ErrorCode.PERMISSION_DENIED
    assert denied.value.rule_id == "researcher-submit/project"
    assert [e.kind for e in audit_since(core, mark)] == ["clearance.denied"]
    assert core.parts.jobs.sessions.active("dev-open") is None
    assert await sessions.list("olivia", "", closed=True) == []
