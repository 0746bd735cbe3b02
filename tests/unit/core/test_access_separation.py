"""Separation of duties on principal records: nobody changes their own record, and an
operator's edit never raises access (tier, operator/security/approver role, licence); lowering
and the fields that grant nothing stay direct. Each refusal is counted by rule and audited."""

from __future__ import annotations

import dataclasses

import pytest

from broker.access.model import Principal, RecordKind, Role
from broker.errors import BrokerError, ErrorCode
from tests.unit.core.harness import Core, amend_principal, audit_mark, audit_since, metric


def _version(core: Core, name: str) -> int:
    return core.parts.registries.records.version(RecordKind.PRINCIPAL, name)


def _record(core: Core, name: str) -> Principal:
    found = core.parts.registries.access.principal(name)
    assert found is not None, name
    return found


async def _put(core: Core, caller: str, principal: Principal, version: int) -> BrokerError:
    with pytest.raises(BrokerError) as info:
        await core.parts.registries.access.put_principal(caller, principal, version)
    return info.value


def _refusals(core: Core, rule: str) -> float:
    return metric(core, "qtestbed_access_refusals_total", rule=rule)


async def test_an_operator_cannot_change_their_own_record(core: Core) -> None:
    olivia = _record(core, "olivia")
    version = _version(core, "olivia")
    mark = audit_mark(core)
    refused = await _put(core, "olivia", dataclasses.replace(olivia, affiliation="x"), version)
    assert (refused.code, refused.rule_id) == (ErrorCode.PERMISSION_DENIED, "access.self-edit")
    assert "another operator must" in refused.detail
    assert _record(core, "olivia") == olivia
    assert _version(core, "olivia") == version
    [event] = audit_since(core, mark)
    assert (event.kind, event.actor, event.subject) == (
        "access.principal.refused",
        "olivia",
        "olivia",
    )
    assert event.detail["rule"] == "access.self-edit"
    assert _refusals(core, "access.self-edit") == 1


@pytest.mark.parametrize(
    ("changes", "flag"),
    [
        ({"tier": "controlled"}, "--tier controlled"),
        ({"roles": frozenset({Role.RESEARCHER, Role.OPERATOR})}, "--role operator"),
        ({"roles": frozenset({Role.RESEARCHER, Role.SECURITY})}, "--role security"),
        ({"roles": frozenset({Role.RESEARCHER, Role.APPROVER})}, "--role approver"),
        ({"licences": frozenset({"EAR-4A906"})}, "--licence EAR-4A906"),
    ],
    ids=["tier", "operator", "security", "approver", "licence"],
)
async def test_an_edit_that_raises_access_is_refused_with_the_request_to_file(
    core: Core, changes: dict[str, object], flag: str
) -> None:
    alice = _record(core, "alice")
    version = _version(core, "alice")
    mark = audit_mark(core)
    raised = dataclasses.replace(alice, **changes)  # type: ignore[arg-type]
    refused = await _put(core, "olivia", raised, version)
    assert (refused.code, refused.rule_id) == (ErrorCode.PERMISSION_DENIED, "access.elevation")
    assert f"qtestbed access request --principal alice {flag} --for 7d" in refused.detail
    assert _record(core, "alice") == alice
    assert [e.kind for e in audit_since(core, mark)] == ["access.principal.refused"]
    assert _refusals(core, "access.elevation") == 1


async def test_lowering_and_fields_that_grant_nothing_stay_direct(core: Core) -> None:
    access = core.parts.registries.access
    bob = _record(core, "bob")
    lowered = dataclasses.replace(bob, tier="open", affiliation="Lab U", projects=("lab", "ops"))
    stored = await access.put_principal("olivia", lowered, _version(core, "bob"))
    assert stored.value == lowered
    sam = _record(core, "sam")
    without = dataclasses.replace(sam, roles=frozenset({Role.RESEARCHER}))
    assert (await access.put_principal("olivia", without, _version(core, "sam"))).value == without
    assert _refusals(core, "access.elevation") == 0


async def test_a_new_principal_starts_from_the_lowest_tier(core: Core) -> None:
    researcher = frozenset({Role.RESEARCHER})
    low = Principal(name="carol", tier="open", roles=researcher, projects=("lab",))
    refused = await _put(core, "olivia", dataclasses.replace(low, tier="controlled"), 0)
    assert refused.rule_id == "access.elevation"
    refused = await _put(
        core, "olivia", dataclasses.replace(low, roles=frozenset({Role.OPERATOR})), 0
    )
    assert refused.rule_id == "access.elevation"
    assert core.parts.registries.access.principal("carol") is None
    stored = await core.parts.registries.access.put_principal("olivia", low, 0)
    assert stored.value == low


async def test_removing_and_recreating_cannot_raise_a_tier(core: Core) -> None:
    access = core.parts.registries.access
    bob = _record(core, "bob")  # restricted
    await access.put_principal(
        "olivia", dataclasses.replace(bob, tier="open"), _version(core, "bob")
    )
    await access.delete_principal("olivia", "bob", _version(core, "bob"))
    refused = await _put(core, "olivia", bob, 0)
    assert refused.rule_id == "access.elevation"
    assert access.principal("bob") is None


async def test_the_check_is_against_the_version_replaced(core: Core) -> None:
    access = core.parts.registries.access
    bob = _record(core, "bob")
    first = _version(core, "bob")
    await access.put_principal("olivia", dataclasses.replace(bob, tier="open"), first)
    # Made from the first read (restricted): not an elevation of that version, but that
    # version is gone; the edit would raise the record it would replace, so it is refused.
    refused = await _put(core, "olivia", dataclasses.replace(bob, affiliation="x"), first)
    assert refused.code is ErrorCode.ABORTED
    assert _record(core, "bob").tier == "open"


async def test_an_edit_cannot_exempt_a_colleague_from_export_control(core: Core) -> None:
    """Nationality and jurisdiction that match an export-controlled device's exempt a principal
    as a licence would: an operator's edit that makes them match is refused."""
    current = core.parts.registries.access.principal("bob")
    assert current is not None
    jurisdiction = "XX-TEST"
    with pytest.raises(BrokerError) as refused:
        await amend_principal(
            core,
            "bob",
            nationality=jurisdiction,
            jurisdictions=frozenset({*current.jurisdictions, jurisdiction}),
        )
    assert refused.value.rule_id == "access.elevation"
    assert "export" in refused.value.detail
    # Leaving the exemption (moving abroad) stays a direct edit.
    await amend_principal(core, "bob", jurisdictions=frozenset())
