"""ClearanceGate with the shipped default Cedar policies: who may see and use which device, at
which moment (expiries are tested with the fake clock at the second they pass), what happens
to a removed principal, swapping the policy set, and explanations naming requirements."""

from __future__ import annotations

import dataclasses

import pytest

from broker.access.clearance import RULE_UNKNOWN_PRINCIPAL, Decision
from broker.access.documents import principal_to_doc
from broker.access.model import Elevation, RecordKind
from broker.devices.model import DeviceRecord, WindowKind
from broker.devices.operations import WindowRequest
from broker.errors import BrokerError, ErrorCode
from broker.jobs.model import JobState
from broker.policy import Action, JobAttributes
from broker.policy.engine import DEFAULT_SCHEMA, PolicyEngine
from tests.unit.core.harness import (
    Core,
    amend_principal,
    attested,
    audit_mark,
    audit_since,
    granted,
    metric,
    request,
    stored_jobs,
)

TRAINING = "dual-use-awareness"
TIER_REASON = (
    "clearance tier 'restricted' or higher is required; you hold 'open'; or a grant for this "
    "device: ask with 'qtestbed access request --device dev-r --for 7d --reason ...'"
)


def _device(core: Core, device_id: str = "dev-open") -> DeviceRecord:
    device = core.parts.registries.devices.get(device_id)
    assert device is not None
    return device


def _submit(core: Core, who: str, device_id: str = "dev-open", project: str = "lab") -> Decision:
    return core.parts.registries.gate.check(
        Action.SUBMIT_JOB,
        who,
        _device(core, device_id),
        now=core.clock.now(),
        job=JobAttributes(project=project),
        attestation="affirming",
    )


def _sees(core: Core, who: str, device_id: str = "dev-open") -> bool:
    return core.parts.registries.gate.visible(who, _device(core, device_id), core.clock.now())


async def test_a_researcher_may_use_a_device_at_their_tier(core: Core) -> None:
    await core.register()
    decision = _submit(core, "alice")
    assert (decision.allowed, decision.rule_id) == (True, "researcher-submit")
    assert _sees(core, "alice")


async def test_a_device_above_the_callers_tier_is_hidden_and_denied_by_the_tier_rule(
    core: Core,
) -> None:
    await core.register("dev-r", tier="restricted")
    assert not _sees(core, "alice", "dev-r")
    decision = _submit(core, "alice", "dev-r")
    assert (decision.allowed, decision.rule_id) == (False, "researcher-submit/tier")
    assert decision.reason == TIER_REASON
    assert _sees(core, "bob", "dev-r")
    assert _submit(core, "bob", "dev-r").allowed


async def test_operators_and_security_see_every_device_but_submit_to_none(core: Core) -> None:
    await core.register("dev-r", tier="restricted")
    assert _sees(core, "olivia", "dev-r")
    assert _sees(core, "sam", "dev-r")
    decision = _submit(core, "olivia", "dev-r", project="ops")
    assert (decision.allowed, decision.rule_id) == (False, "researcher-submit/role")


async def test_a_clearance_is_refused_from_the_second_it_expires(core: Core) -> None:
    await core.register()
    await amend_principal(core, "alice", clearance_expires_at=core.clock.now() + 60)
    core.clock.advance(59)
    assert _submit(core, "alice").allowed
    assert _sees(core, "alice")
    core.clock.advance(1)
    decision = _submit(core, "alice")
    assert (decision.allowed, decision.rule_id) == (False, "researcher-submit/clearance")
    assert decision.reason.startswith("your clearance expired on ")
    assert not _sees(core, "alice")  # researchers see devices only while cleared


async def test_a_job_queued_before_the_clearance_expired_is_denied_at_dispatch(
    core: Core,
) -> None:
    driver = await attested(core)
    await amend_principal(core, "alice", clearance_expires_at=core.clock.now() + 60)
    [(view, _)] = await core.parts.services.submission.submit_many("alice", [request()])
    core.clock.advance(60)
    mark = audit_mark(core)
    await core.pump()
    assert driver.grants() == []
    job = await core.parts.jobs.ledger.get(view.job.job_id)
    assert job is not None
    assert (job.state, job.rule_id) == (JobState.DENIED, "researcher-dispatch/clearance")
    [event] = audit_since(core, mark)
    assert (event.kind, event.subject) == ("clearance.denied", job.job_id)
    assert event.detail["stage"] == "dispatch"
    assert event.detail["rule"] == "researcher-dispatch/clearance"
    labels = {"rule": "researcher-dispatch/clearance", "stage": "dispatch"}
    assert metric(core, "qtestbed_clearance_denials_total", **labels) == 1


async def _as_the_facility_file_says(core: Core, name: str, **changes: object) -> None:
    """Nationality and jurisdictions as the export-compliance officer's facility file sets them
    (an operator's edit cannot make them match: that exempts as a licence would)."""
    records = core.parts.registries.records
    current = core.parts.registries.access.principal(name)
    assert current is not None, name
    changed = dataclasses.replace(current, **changes)  # type: ignore[arg-type]
    version = records.version(RecordKind.PRINCIPAL, name)
    await records.put("facility", RecordKind.PRINCIPAL, name, principal_to_doc(changed), version)


async def test_expired_training_is_refused_on_an_export_controlled_device(core: Core) -> None:
    await core.register()  # 5 qubits: EAR99
    await core.register("dev-big", num_qubits=40)  # 34-99 band, error unknown: controlled
    assert core.parts.registries.exports.controlled("dev-big")
    now = core.clock.now()
    await _as_the_facility_file_says(
        core, "alice", nationality="US", jurisdictions=frozenset({"US"})
    )
    await amend_principal(core, "alice", training={TRAINING: now + 100})
    assert _submit(core, "alice", "dev-big").allowed
    core.clock.advance(100)
    decision = _submit(core, "alice", "dev-big")
    assert (decision.allowed, decision.rule_id) == (False, "researcher-submit/training")
    assert "require current dual-use-awareness training; yours expired on " in decision.reason
    assert _submit(core, "alice").allowed  # an uncontrolled device needs no training


async def test_an_export_controlled_device_needs_the_jurisdiction_or_the_licence(
    core: Core,
) -> None:
    await core.register("dev-big", num_qubits=40)
    now = core.clock.now()
    await amend_principal(core, "bob", training={TRAINING: now + 3600})
    decision = _submit(core, "bob", "dev-big")
    assert (decision.allowed, decision.rule_id) == (False, "export-jurisdiction")
    await granted(core, "bob", Elevation.LICENCE, "EAR-4A906")  # a licence comes by a grant
    assert _submit(core, "bob", "dev-big").allowed


async def test_a_reservation_refuses_other_projects_only_while_it_is_open(core: Core) -> None:
    await core.register()
    now = core.clock.now()
    window = WindowRequest(
        kind=WindowKind.RESERVATION, starts_at=now + 10, ends_at=now + 70, project="ops"
    )
    await core.parts.registries.schedule.add_window("olivia", "dev-open", window)
    assert _submit(core, "alice").allowed
    core.clock.advance(10)
    decision = _submit(core, "alice")
    assert (decision.allowed, decision.rule_id) == (False, "researcher-submit/reservation")
    core.clock.advance(60)
    assert _submit(core, "alice").allowed


async def test_a_removed_principal_is_refused_as_unknown(core: Core) -> None:
    await core.register()
    version = core.parts.registries.records.version(RecordKind.PRINCIPAL, "alice")
    await core.parts.registries.access.delete_principal("olivia", "alice", version)
    decision = _submit(core, "alice")
    assert (decision.allowed, decision.rule_id) == (False, RULE_UNKNOWN_PRINCIPAL)
    assert decision.rule_id == "principal.unknown"
    assert "no longer registered" in decision.reason
    assert not _sees(core, "alice")


async def test_a_removed_principals_queued_job_is_denied_at_dispatch(core: Core) -> None:
    driver = await attested(core)
    [(view, _)] = await core.parts.services.submission.submit_many("alice", [request()])
    version = core.parts.registries.records.version(RecordKind.PRINCIPAL, "alice")
    await core.parts.registries.access.delete_principal("olivia", "alice", version)
    await core.pump()
    assert driver.grants() == []
    job = await core.parts.jobs.ledger.get(view.job.job_id)
    assert job is not None
    assert (job.state, job.rule_id) == (JobState.DENIED, "principal.unknown")
    labels = {"rule": "principal.unknown", "stage": "dispatch"}
    assert metric(core, "qtestbed_clearance_denials_total", **labels) == 1


_VIEW_ONLY = """
@id("anyone-views")
@reason("in this test every principal sees every device and nobody submits")
permit (principal, action == Qtestbed::Action::"ViewDevice", resource);
"""


async def test_use_engine_decides_with_the_new_policy_set_from_then_on(core: Core) -> None:
    await core.register()
    await core.register("dev-r", tier="restricted")
    gate = core.parts.registries.gate
    shipped = gate.engine
    view_only = PolicyEngine.load(_VIEW_ONLY, DEFAULT_SCHEMA.read_text())
    gate.use_engine(view_only)
    assert gate.engine is view_only
    assert _sees(core, "alice", "dev-r")
    mark = audit_mark(core)
    with pytest.raises(BrokerError) as info:
        await core.parts.services.submission.submit_many("alice", [request()])
    assert (info.value.code, info.value.rule_id) == (ErrorCode.PERMISSION_DENIED, "default-deny")
    assert [e.kind for e in audit_since(core, mark)] == ["clearance.denied"]
    assert stored_jobs(core) == []
    gate.use_engine(shipped)
    assert not _sees(core, "alice", "dev-r")
    assert _submit(core, "alice").allowed


async def test_explain_names_every_requirement_and_the_one_not_met(core: Core) -> None:
    await core.register("dev-r", tier="restricted")
    explanation = core.parts.registries.gate.explain(
        "alice",
        "dev-r",
        _device(core, "dev-r"),
        action="SubmitJob",
        project="",
        now=core.clock.now(),
    )
    assert not explanation.allowed
    assert explanation.policy_ids == ("researcher-submit/tier",)
    met = {r.rule_id: r.met for r in explanation.requirements}
    assert met == {
        "researcher-submit/role": True,
        "researcher-submit/tier": False,
        "researcher-submit/clearance": True,
        "researcher-submit/project": True,
        "researcher-submit/training": True,
        "researcher-submit/state": True,
        "researcher-submit/reservation": True,
    }
    [tier] = [r for r in explanation.requirements if not r.met]
    assert tier.text == TIER_REASON


async def test_explain_refuses_an_unknown_principal_device_or_action(core: Core) -> None:
    await core.register()
    gate = core.parts.registries.gate
    now = core.clock.now()
    device = _device(core)
    with pytest.raises(BrokerError) as nobody:
        gate.explain("nobody", "dev-open", device, action="", project="", now=now)
    assert (nobody.value.code, nobody.value.detail) == (
        ErrorCode.NOT_FOUND,
        "principal 'nobody' not found",
    )
    with pytest.raises(BrokerError) as nothing:
        gate.explain("alice", "dev-ghost", None, action="", project="", now=now)
    assert (nothing.value.code, nothing.value.detail) == (
        ErrorCode.NOT_FOUND,
        "device 'dev-ghost' not found",
    )
    with pytest.raises(BrokerError) as action:
        gate.explain("alice", "dev-open", device, action="Teleport", project="", now=now)
    assert action.value.code is ErrorCode.INVALID_ARGUMENT
