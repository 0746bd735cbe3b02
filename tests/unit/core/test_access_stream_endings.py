"""An open stream lasts only while a new call would be let through: when its principal is
removed, a role it needed is taken away, the grant that gave the role expires or is revoked, or
(WatchJob of another's job) the caller is no longer an operator, the stream is ended with the
answer a new call would get, counted by reason and audited in aggregate."""

from __future__ import annotations

import dataclasses

from broker.access.model import Elevation, RecordKind, Role
from broker.access.open_streams import (
    CURRENT_STREAM,
    REVOKED,
    OpenStreams,
    SharedCheck,
    StreamEnding,
    StreamTicket,
)
from broker.errors import ErrorCode
from broker.grpc.identity import Caller
from broker.wiring.edges import edge_identity
from tests.unit.core.harness import Core, amend_principal, events, granted, metric, queued

AUDIT = "/qtestbed.v1.AuditService/StreamAudit"
WATCH = "/qtestbed.v1.JobService/WatchJob"


def _open(core: Core, name: str, method: str) -> StreamTicket:
    r = core.parts.registries
    principal = r.grants.principal(name)
    assert principal is not None
    caller = Caller(principal=principal, serial=f"{len(r.streams) + 1:x}")
    check = edge_identity(core.parts.base, r).stream_check(caller, method)
    return r.streams.open(caller.serial, name, check)


def _ended(core: Core, reason: str) -> float:
    return metric(core, "qtestbed_streams_ended_total", reason=reason)


async def test_a_role_taken_away_ends_the_stream_with_permission_denied(core: Core) -> None:
    sam = _open(core, "sam", AUDIT)
    sue = _open(core, "sue", AUDIT)
    await amend_principal(core, "sam", roles=frozenset({Role.RESEARCHER}))
    assert sam.ended.is_set()
    assert sam.why is not None
    assert sam.why.error.code is ErrorCode.PERMISSION_DENIED
    assert not sue.ended.is_set()
    assert _ended(core, "role_required") == 1
    await core.parts.registries.call_limits.flush(force=True)
    [audited] = events(core, "edge.stream_ended")
    assert audited.subject == "sam"
    assert audited.detail["reason"] == "role_required"


async def test_a_removed_principal_loses_its_stream(core: Core) -> None:
    alice = _open(core, "alice", WATCH)
    version = core.parts.registries.records.version(RecordKind.PRINCIPAL, "alice")
    await core.parts.registries.access.delete_principal("olivia", "alice", version)
    assert alice.why is not None
    assert alice.why.reason == "unknown_principal"
    assert alice.why.error.code is ErrorCode.UNAUTHENTICATED


async def test_a_stream_opened_under_a_grant_ends_when_the_grant_expires(core: Core) -> None:
    await granted(core, "alice", Elevation.ROLE, "security", seconds=60.0)
    alice = _open(core, "alice", AUDIT)
    core.parts.registries.streams.recheck()
    assert not alice.ended.is_set()  # the grant is in force
    core.clock.advance(61.0)  # no record changes: the tick's recheck must see it
    assert core.parts.registries.streams.recheck() == 1
    assert alice.why is not None
    assert alice.why.error.code is ErrorCode.PERMISSION_DENIED


async def test_a_revoked_grant_ends_the_stream_at_once(core: Core) -> None:
    grant = await granted(core, "alice", Elevation.ROLE, "security", seconds=3600.0)
    alice = _open(core, "alice", AUDIT)
    await core.parts.registries.requests.revoke("sam", grant.request_id, "no longer needed")
    assert alice.ended.is_set()
    assert _ended(core, "role_required") == 1


async def test_an_operators_watch_of_anothers_job_ends_when_they_are_no_operator(
    core: Core,
) -> None:
    await core.register()
    job_id = await queued(core, "alice")
    olivia = _open(core, "olivia", WATCH)
    CURRENT_STREAM.set(olivia)  # as the edge sets it around the service's stream
    watch = core.parts.services.jobs.watch("olivia", job_id)
    assert (await anext(watch)).job.job_id == job_id
    access = core.parts.registries.access
    current = access.principal("olivia")
    assert current is not None
    demoted = dataclasses.replace(current, roles=frozenset({Role.RESEARCHER}))
    version = core.parts.registries.records.version(RecordKind.PRINCIPAL, "olivia")
    await access.put_principal("sam", demoted, version)  # another principal's edit
    # WatchJob still allows a researcher, but a new call would answer NOT_FOUND.
    assert olivia.why is not None
    assert olivia.why.reason == "not_found"
    assert olivia.why.error.code is ErrorCode.NOT_FOUND
    aclose = getattr(watch, "aclose")  # noqa: B009 - an async generator, typed as an iterator
    await aclose()


def test_one_credentials_streams_on_one_method_are_checked_once_a_recheck() -> None:
    """1,500 streams of one principal used to cost the tick 1,500 identity checks (about 11 ms
    of event loop a tick); the edge's check is shared: once per credential and method."""
    asked: list[str] = []
    verdict: list[StreamEnding | None] = [None]

    def edge(serial: str, method: str) -> SharedCheck:
        def run() -> StreamEnding | None:
            asked.append(f"{serial} {method}")
            return verdict[0]

        return SharedCheck(key=("edge", serial, method), run=run)

    streams = OpenStreams()
    alice = [streams.open("a1", "alice", edge("a1", WATCH)) for _ in range(50)]
    other = streams.open("b1", "bob", edge("b1", WATCH))
    also = streams.open("a1", "alice", edge("a1", AUDIT))
    assert streams.recheck() == 0
    assert sorted(asked) == [f"a1 {AUDIT}", f"a1 {WATCH}", f"b1 {WATCH}"]
    asked.clear()
    verdict[0] = REVOKED
    assert streams.recheck() == 52  # every stream ends, each with the shared answer
    assert all(t.why is REVOKED for t in [*alice, other, also])
    assert len(asked) == 3
