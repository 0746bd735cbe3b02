"""Hidden and absent are the same (THREATS.md): every call that takes a device, job or session
id does the same work, step by step, and gives the same answer whether what it names is hidden
from the caller, someone else's, or nothing at all.

Each case runs in two worlds built alike but for one thing. In `there`, the id alice asks about
names a device above her tier (attested, so everything about it is known to the broker) or a
job or session of bob's; in `nowhere` the same id names nothing. The same call with the same id
is recorded in both (tests/unit/core/work.py: every policy decision and Cedar evaluation, the
gate and the registries behind it, every store call and anomaly observation, audit entries,
metric changes, log lines, the answer) and the two records must be equal. Each call is made
after the same prelude in both worlds, one for each state an attacker can put the policy caches
in: cold; after ListDevices (which decides every real device, the hidden one included); after
asking the same thing, in the same second or the one before; after asking about another id
that names nothing.
"""

from __future__ import annotations

import contextlib
import functools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from broker.errors import BrokerError
from tests.unit.core.harness import Core, attested, queued, request
from tests.unit.core.work import Recorder, Work, watch_cedar

HIDDEN = "dev-secret"  # restricted: above alice's tier (she is `open`)
BOBS = "dev-bob"  # where bob holds a session


@dataclass(frozen=True, kw_only=True, slots=True)
class Named:
    """The ids the calls ask about: those of the world where they name something."""

    device: str
    job: str
    session: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Worlds:
    there: Recorder
    nowhere: Recorder
    named: Named


async def _build(*, hidden: bool) -> tuple[Core, Named]:
    core = await Core().start()
    await attested(core, "dev-open")
    await attested(core, BOBS)
    if hidden:
        await attested(core, HIDDEN, tier="restricted")
    job = await queued(core, "bob")
    session = await core.parts.services.sessions.open("bob", BOBS, "", 0)
    return core, Named(device=HIDDEN, job=job, session=session.session_id)


@pytest.fixture
async def worlds(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Worlds]:
    watch_cedar(monkeypatch)
    there, named = await _build(hidden=True)
    nowhere, _ = await _build(hidden=False)
    try:
        yield Worlds(
            there=Recorder(there, monkeypatch), nowhere=Recorder(nowhere, monkeypatch), named=named
        )
    finally:
        there.close()
        nowhere.close()


Call = Callable[[Core, str], Awaitable[object]]


async def _get_device(core: Core, ident: str) -> object:
    return await core.parts.services.directory.get("alice", ident)


async def _submit_job(core: Core, ident: str) -> object:
    return await core.parts.services.submission.submit_many("alice", [request(ident)])


async def _submit_jobs(core: Core, ident: str) -> object:
    # The first job is fine: the refusal of the second comes after real work.
    batch = [request("dev-open"), request(ident)]
    return await core.parts.services.submission.submit_many("alice", batch)


async def _submit_into_session(core: Core, ident: str) -> object:
    return await core.parts.services.submission.submit_many(
        "alice", [request("", session_id=ident)]
    )


async def _open_session(core: Core, ident: str) -> object:
    return await core.parts.services.sessions.open("alice", ident, "", 0)


async def _get_job(core: Core, ident: str) -> object:
    return await core.parts.services.jobs.get("alice", ident)


async def _watch_job(core: Core, ident: str) -> object:
    async for view in core.parts.services.jobs.watch("alice", ident):
        return view
    return None


async def _cancel_job(core: Core, ident: str) -> object:
    return await core.parts.services.jobs.cancel("alice", ident, "")


async def _get_result(core: Core, ident: str) -> object:
    return await core.parts.services.jobs.result("alice", ident)


async def _get_result_proof(core: Core, ident: str) -> object:
    return await core.parts.services.result_proofs.proof("alice", ident)


async def _get_session(core: Core, ident: str) -> object:
    return await core.parts.services.sessions.get("alice", ident)


async def _close_session(core: Core, ident: str) -> object:
    return await core.parts.services.sessions.close("alice", ident, "")


@dataclass(frozen=True, kw_only=True, slots=True)
class Case:
    rpc: str
    names: str  # "device", "job" or "session": which of `Named` the call asks about
    call: Call
    answer: str  # the NOT_FOUND detail, with {id} for the id
    essential: str  # a step the call must take in both worlds for the comparison to mean much

    def ident(self, named: Named) -> str:
        return str(getattr(named, self.names))


_DEVICE_MISS = "device {id!r} not found"
CASES = (
    Case(
        rpc="GetDevice",
        names="device",
        call=_get_device,
        answer=_DEVICE_MISS,
        essential="policy.verdict",
    ),
    Case(
        rpc="SubmitJob",
        names="device",
        call=_submit_job,
        answer=_DEVICE_MISS,
        essential="policy.verdict",
    ),
    Case(
        rpc="SubmitJobs",
        names="device",
        call=_submit_jobs,
        answer="job 2 of 2 (nothing in the batch was queued): " + _DEVICE_MISS,
        essential="policy.verdict",
    ),
    Case(
        rpc="OpenSession",
        names="device",
        call=_open_session,
        answer=_DEVICE_MISS,
        essential="policy.verdict",
    ),
    Case(
        rpc="GetJob",
        names="job",
        call=_get_job,
        answer="job {id!r} not found",
        essential="store.get_jobs",
    ),
    Case(
        rpc="WatchJob",
        names="job",
        call=_watch_job,
        answer="job {id!r} not found",
        essential="store.get_jobs",
    ),
    Case(
        rpc="CancelJob",
        names="job",
        call=_cancel_job,
        answer="job {id!r} not found",
        essential="store.get_jobs",
    ),
    Case(
        rpc="GetResult",
        names="job",
        call=_get_result,
        answer="job {id!r} not found",
        essential="store.get_jobs",
    ),
    Case(
        rpc="GetResultProof",
        names="job",
        call=_get_result_proof,
        answer="job {id!r} not found",
        essential="store.get_jobs",
    ),
    Case(
        rpc="GetSession",
        names="session",
        call=_get_session,
        answer="session {id!r} not found",
        essential="store.get_session",
    ),
    Case(
        rpc="CloseSession",
        names="session",
        call=_close_session,
        answer="session {id!r} not found",
        essential="store.get_session",
    ),
    Case(
        rpc="SubmitJob into a session",
        names="session",
        call=_submit_into_session,
        answer="session {id!r} not found or no longer open; open a new one",
        essential="sessions.for_submit",
    ),
)


async def _quietly(call: Awaitable[object]) -> None:
    with contextlib.suppress(BrokerError):
        await call


Prelude = Callable[[Core, Case, str], Awaitable[None]]


async def _cold(core: Core, case: Case, ident: str) -> None:
    return None


async def _after_list_devices(core: Core, case: Case, ident: str) -> None:
    await core.parts.services.directory.list("alice")


async def _after_the_same_call(core: Core, case: Case, ident: str) -> None:
    await _quietly(case.call(core, ident))


async def _a_second_after_the_same_call(core: Core, case: Case, ident: str) -> None:
    await _quietly(case.call(core, ident))
    core.clock.advance(1.0)


async def _after_another_absent_id(core: Core, case: Case, ident: str) -> None:
    other = "dev-nothing" if case.names == "device" else uuid.uuid4().hex
    await _quietly(case.call(core, other))


DEVICE_PRELUDES: dict[str, Prelude] = {
    "cold": _cold,
    "after ListDevices": _after_list_devices,
    "after the same call": _after_the_same_call,
    "a second after the same call": _a_second_after_the_same_call,
    "after another absent id": _after_another_absent_id,
}
OTHER_PRELUDES = ("cold", "after the same call")
MATRIX = [
    pytest.param(case, name, id=f"{case.rpc}-{name}")
    for case in CASES
    for name in DEVICE_PRELUDES
    if case.names == "device" or name in OTHER_PRELUDES
]


async def _recorded(recorder: Recorder, case: Case, prelude: Prelude, ident: str) -> Work:
    await prelude(recorder.core, case, ident)
    return await recorder.run(lambda: case.call(recorder.core, ident))


@pytest.mark.parametrize(("case", "prelude"), MATRIX)
async def test_hidden_or_foreign_and_absent_do_the_same_work_and_get_the_same_answer(
    worlds: Worlds, case: Case, prelude: str
) -> None:
    ident = case.ident(worlds.named)
    before = DEVICE_PRELUDES[prelude]
    there = await _recorded(worlds.there, case, before, ident)
    nowhere = await _recorded(worlds.nowhere, case, before, ident)
    assert there.steps == nowhere.steps
    assert (there.audit, there.metrics, there.logs) == (
        nowhere.audit,
        nowhere.metrics,
        nowhere.logs,
    )
    assert there.answer == nowhere.answer == ("NOT_FOUND", case.answer.format(id=ident), "")
    assert there.count(case.essential) >= 1, there.steps


async def test_the_worlds_differ_only_in_what_alice_may_not_see(worlds: Worlds) -> None:
    """The comparison means something: in `there` the device, job and session exist (bob sees
    them), in `nowhere` nobody does, not even an operator."""
    named = worlds.named
    there, nowhere = worlds.there.core.parts.services, worlds.nowhere.core.parts.services
    assert (await there.directory.get("bob", named.device)).device.device_id == named.device
    assert (await there.jobs.get("bob", named.job)).job.owner == "bob"
    assert (await there.sessions.get("bob", named.session)).owner == "bob"
    for lookup in (
        nowhere.directory.get("olivia", named.device),
        nowhere.jobs.get("olivia", named.job),
        nowhere.sessions.get("olivia", named.session),
    ):
        with pytest.raises(BrokerError, match="not found"):
            await lookup


async def test_a_device_lookup_decides_visibility_once_by_cedar_then_from_its_own_cache(
    worlds: Worlds,
) -> None:
    """What the records above hold for GetDevice, spelled out: one verdict per lookup, one
    Cedar evaluation for a new question (none of `decide`'s probes), none for a repeat."""
    ident = worlds.named.device
    for recorder in (worlds.there, worlds.nowhere):
        lookup = functools.partial(_get_device, recorder.core, ident)
        first = await recorder.run(lookup)
        again = await recorder.run(lookup)
        assert (first.count("policy.verdict"), first.count("cedar.is_authorized")) == (1, 1)
        assert (again.count("policy.verdict"), again.count("cedar.is_authorized")) == (1, 0)
        assert first.count("policy.decide") == first.count("cedar.parse_entities") == 0
        assert first.count("anomaly.refusal('alice')") == 1


async def test_a_revoked_device_is_refused_at_submit_after_the_same_work_as_an_absent_one(
    worlds: Worlds,
) -> None:
    there = worlds.there.core
    await there.parts.registries.devices.revoke("olivia", "dev-open", "key exposed")
    nowhere = worlds.nowhere.core
    # In `nowhere` the id alice names was never registered; in `there` it is revoked.
    revoked = await worlds.there.run(lambda: _submit_job(there, "dev-open"))
    absent = await worlds.nowhere.run(lambda: _submit_job(nowhere, "dev-gone"))
    assert revoked.answer[:2] == ("NOT_FOUND", "device 'dev-open' not found")
    assert absent.answer[:2] == ("NOT_FOUND", "device 'dev-gone' not found")
    assert [s.replace("dev-open", "ID") for s in revoked.steps] == [
        s.replace("dev-gone", "ID") for s in absent.steps
    ]
