"""AccessRegistry and AccessRecords: principals and projects changed by compare-and-set, each
write audited and counted, and a refused write leaving the store as it was."""

from __future__ import annotations

import dataclasses

import pytest

from broker.access.model import Principal, Project, RecordKind, Role
from broker.errors import BrokerError, ErrorCode
from broker.grpc.codec.access import principal_from_proto
from qtestbed.v1 import access_pb2 as pb
from tests.unit.core.harness import Core, audit_mark, audit_since, metric

RESEARCHER = frozenset({Role.RESEARCHER})


def _carol(**changes: object) -> Principal:
    # Created at the lowest tier: an edit never raises a tier (an access request does).
    carol = Principal(name="carol", tier="open", roles=RESEARCHER, projects=("lab",))
    return dataclasses.replace(carol, **changes)  # type: ignore[arg-type]


def _version(core: Core, kind: RecordKind, name: str) -> int:
    return core.parts.registries.records.version(kind, name)


def _changes(core: Core, kind: str) -> float:
    return metric(core, "qtestbed_access_changes_total", kind=kind)


async def _refused_put(core: Core, principal: Principal, version: int) -> BrokerError:
    with pytest.raises(BrokerError) as info:
        await core.parts.registries.access.put_principal("olivia", principal, version)
    return info.value


async def test_creating_a_principal_stores_version_1_audited_and_counted(core: Core) -> None:
    access = core.parts.registries.access
    mark = audit_mark(core)
    stored = await access.put_principal("olivia", _carol(), 0)
    assert stored.value == _carol()
    assert stored.meta is not None
    assert (stored.meta.version, stored.meta.updated_by) == (1, "olivia")
    assert stored.meta.updated_at == core.clock.now()
    assert access.principal("carol") == _carol()
    [event] = audit_since(core, mark)
    assert (event.kind, event.actor, event.subject) == (
        "access.principal.created",
        "olivia",
        "carol",
    )
    assert event.detail["version"] == 1
    assert event.detail["record"]["tier"] == "open"
    assert _changes(core, "principal") == 1


async def test_updating_a_principal_at_its_version_moves_it_on(core: Core) -> None:
    access = core.parts.registries.access
    await access.put_principal("olivia", _carol(), 0)
    mark = audit_mark(core)
    stored = await access.put_principal("olivia", _carol(affiliation="Lab U"), 1)
    assert stored.meta is not None
    assert stored.meta.version == 2
    assert access.principal("carol") == _carol(affiliation="Lab U")
    assert [e.kind for e in audit_since(core, mark)] == ["access.principal.updated"]
    assert _changes(core, "principal") == 2


async def test_an_update_from_a_stale_version_is_aborted_and_changes_nothing(core: Core) -> None:
    access = core.parts.registries.access
    before = access.principal("alice")
    assert before is not None
    version = _version(core, RecordKind.PRINCIPAL, "alice")
    await access.put_principal("olivia", dataclasses.replace(before, affiliation="A"), version)
    mark = audit_mark(core)
    stale = dataclasses.replace(before, affiliation="B")  # made from the first read
    refused = await _refused_put(core, stale, version)
    assert refused.code is ErrorCode.ABORTED
    assert refused.detail == "principal 'alice' changed since you read it; read it again and retry"
    assert access.principal("alice") == dataclasses.replace(before, affiliation="A")
    assert _version(core, RecordKind.PRINCIPAL, "alice") == version + 1
    assert audit_since(core, mark) == []
    assert _changes(core, "principal") == 1


async def test_creating_a_principal_that_exists_is_aborted(core: Core) -> None:
    mark = audit_mark(core)
    refused = await _refused_put(core, _carol(name="alice", affiliation="Elsewhere"), 0)
    assert refused.code is ErrorCode.ABORTED
    assert refused.detail.startswith("principal 'alice' already exists (version 1)")
    alice = core.parts.registries.access.principal("alice")
    assert alice is not None
    assert alice.affiliation != "Elsewhere"
    assert audit_since(core, mark) == []


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"tier": "top-secret"}, "tier 'top-secret' is not one of open, controlled, restricted"),
        ({"projects": ("lab", "nowhere")}, "project(s) nowhere do not exist"),
    ],
    ids=["tier", "project"],
)
async def test_a_principal_with_an_unknown_tier_or_project_is_invalid_argument(
    core: Core, changes: dict[str, object], says: str
) -> None:
    mark = audit_mark(core)
    refused = await _refused_put(core, _carol(**changes), 0)
    assert refused.code is ErrorCode.INVALID_ARGUMENT
    assert says in refused.detail
    assert core.parts.registries.access.principal("carol") is None
    assert audit_since(core, mark) == []
    assert _changes(core, "principal") == 0


def test_a_principal_with_no_role_is_invalid_argument_at_the_edge() -> None:
    message = pb.Principal(name="carol", tier="open", roles=[], projects=["lab"])
    with pytest.raises(BrokerError) as info:
        principal_from_proto(message)
    assert info.value.code is ErrorCode.INVALID_ARGUMENT
    assert "give at least one role" in info.value.detail


def test_a_principal_with_an_unknown_role_is_invalid_argument_at_the_edge() -> None:
    message = pb.Principal(name="carol", tier="open", roles=["admin"], projects=["lab"])
    with pytest.raises(BrokerError) as info:
        principal_from_proto(message)
    assert info.value.code is ErrorCode.INVALID_ARGUMENT
    assert "roles are researcher, operator, security" in info.value.detail


async def test_removing_a_principal_is_audited_and_takes_effect_at_once(core: Core) -> None:
    access = core.parts.registries.access
    mark = audit_mark(core)
    await access.delete_principal("olivia", "alice", _version(core, RecordKind.PRINCIPAL, "alice"))
    assert access.principal("alice") is None
    [event] = audit_since(core, mark)
    assert (event.kind, event.actor, event.subject) == (
        "access.principal.removed",
        "olivia",
        "alice",
    )
    assert _changes(core, "principal") == 1
    with pytest.raises(BrokerError) as info:
        access.principal_record("alice")
    assert info.value.code is ErrorCode.NOT_FOUND


async def test_removing_a_principal_from_a_stale_version_is_aborted(core: Core) -> None:
    access = core.parts.registries.access
    version = _version(core, RecordKind.PRINCIPAL, "alice")
    alice = access.principal("alice")
    assert alice is not None
    await access.put_principal("olivia", alice, version)  # moves the version on
    mark = audit_mark(core)
    with pytest.raises(BrokerError) as info:
        await access.delete_principal("olivia", "alice", version)
    assert info.value.code is ErrorCode.ABORTED
    assert access.principal("alice") is not None
    assert audit_since(core, mark) == []


async def test_an_operator_cannot_remove_themselves(core: Core) -> None:
    access = core.parts.registries.access
    mark = audit_mark(core)
    with pytest.raises(BrokerError) as info:
        await access.delete_principal(
            "olivia", "olivia", _version(core, RecordKind.PRINCIPAL, "olivia")
        )
    assert (info.value.code, info.value.rule_id) == (
        ErrorCode.PERMISSION_DENIED,
        "access.self-edit",
    )
    assert "you cannot remove your own principal" in info.value.detail
    assert access.principal("olivia") is not None
    assert [e.kind for e in audit_since(core, mark)] == ["access.principal.refused"]


async def test_removing_an_unknown_principal_is_not_found(core: Core) -> None:
    mark = audit_mark(core)
    with pytest.raises(BrokerError) as info:
        await core.parts.registries.access.delete_principal("olivia", "nobody", 1)
    assert (info.value.code, info.value.detail) == (
        ErrorCode.NOT_FOUND,
        "principal 'nobody' not found",
    )
    assert audit_since(core, mark) == []


async def test_creating_and_updating_a_project_is_compare_and_set(core: Core) -> None:
    access = core.parts.registries.access
    mark = audit_mark(core)
    created = await access.put_project("olivia", Project(name="qc", weight=2), 0)
    assert created.meta is not None
    assert created.meta.version == 1
    updated = await access.put_project("olivia", Project(name="qc", weight=3), 1)
    assert updated.meta is not None
    assert (updated.value.weight, updated.meta.version) == (3, 2)
    with pytest.raises(BrokerError) as stale:
        await access.put_project("olivia", Project(name="qc", weight=9), 1)
    assert stale.value.code is ErrorCode.ABORTED
    with pytest.raises(BrokerError) as exists:
        await access.put_project("olivia", Project(name="qc", weight=9), 0)
    assert exists.value.code is ErrorCode.ABORTED
    project = access.project("qc")
    assert project is not None
    assert project.weight == 3
    assert [e.kind for e in audit_since(core, mark)] == [
        "access.project.created",
        "access.project.updated",
    ]
    assert _changes(core, "project") == 2


async def test_a_project_can_be_joined_once_it_exists(core: Core) -> None:
    access = core.parts.registries.access
    await access.put_project("olivia", Project(name="qc"), 0)
    stored = await access.put_principal("olivia", _carol(projects=("lab", "qc")), 0)
    assert stored.value.projects == ("lab", "qc")


async def test_an_access_change_kicks_every_devices_queue(core: Core) -> None:
    await core.register("dev-a")
    await core.register("dev-b")
    await core.pump()
    await core.parts.registries.access.put_project("olivia", Project(name="qc"), 0)
    kicked = set()
    while (device := core.parts.registries.wakeups.take()) is not None:
        kicked.add(device)
    assert kicked == {"dev-a", "dev-b"}
