"""Separation of duties and just-in-time access against a real broker and driver processes:
nobody edits their own record, every elevation takes a second principal with the approver role,
break-glass takes two security principals, and an approved device grant expires at its time so
that the next dispatch is refused. Each step is audited and each refusal counted by rule."""

from __future__ import annotations

import pytest

from qtestbed.cli.demo import ghz_qasm2
from qtestbed.client import Client, QtestbedError
from qtestbed.testing import LocalFacility, eventually
from qtestbed.v1 import access_pb2, credentials_pb2
from qtestbed.v1 import grants_pb2 as pb
from tests.integration.support import (
    audit_entries,
    last_audit_seq,
    metric_value,
    scrape,
    wait_state,
)

HOUR = 3600.0


def _ask(
    client: Client,
    kind: pb.ElevationKind.ValueType,
    value: str,
    *,
    seconds: float = HOUR,
    principal: str = "",
    break_glass: bool = False,
) -> pb.AccessRequest:
    message = pb.RequestAccessRequest(
        principal=principal,
        kind=kind,
        value=value,
        duration_seconds=seconds,
        reason="integration test",
        break_glass=break_glass,
    )
    filed: pb.AccessRequest = client.call(client.access_requests.RequestAccess, message)
    return filed


def _approve(client: Client, request_id: str) -> pb.AccessRequest:
    message = pb.DecideAccessRequest(request_id=request_id, reason="ok")
    approved: pb.AccessRequest = client.call(client.access_requests.ApproveAccess, message)
    return approved


def _refused(call: object, code: str, rule: str) -> QtestbedError:
    with pytest.raises(QtestbedError) as caught:
        call()  # type: ignore[operator]
    assert (caught.value.code, caught.value.rule_id) == (code, rule), caught.value
    return caught.value


def _sees(client: Client, device_id: str) -> bool:
    return any(d.device_id == device_id for d in client.devices())


def _refusals(facility: LocalFacility, rule: str) -> float:
    return metric_value(scrape(facility), "qtestbed_access_refusals_total", rule=rule)


def test_nobody_edits_their_own_record_and_no_edit_raises_access(running: LocalFacility) -> None:
    olivia = running.client("olivia")
    mark = last_audit_seq(running)
    own = olivia.call(olivia.access.GetPrincipal, access_pb2.GetPrincipalRequest(name="olivia"))
    own.principal.affiliation = "elsewhere"
    put = access_pb2.PutPrincipalRequest(principal=own.principal, expected_version=own.meta.version)
    _refused(
        lambda: olivia.call(olivia.access.PutPrincipal, put),
        "PERMISSION_DENIED",
        "access.self-edit",
    )
    alice = olivia.call(olivia.access.GetPrincipal, access_pb2.GetPrincipalRequest(name="alice"))
    alice.principal.tier = "restricted"
    raise_ = access_pb2.PutPrincipalRequest(
        principal=alice.principal, expected_version=alice.meta.version
    )
    refused = _refused(
        lambda: olivia.call(olivia.access.PutPrincipal, raise_),
        "PERMISSION_DENIED",
        "access.elevation",
    )
    assert "qtestbed access request --principal alice --tier restricted" in refused.message
    remove = access_pb2.DeletePrincipalRequest(name="olivia", expected_version=own.meta.version)
    _refused(
        lambda: olivia.call(olivia.access.DeletePrincipal, remove),
        "PERMISSION_DENIED",
        "access.self-edit",
    )
    after = olivia.call(olivia.access.GetPrincipal, access_pb2.GetPrincipalRequest(name="alice"))
    assert after.principal.tier == "open"
    refusals = [
        e for e in audit_entries(running, after_seq=mark) if e.kind == "access.principal.refused"
    ]
    assert [e.detail["rule"] for e in refusals] == [
        "access.self-edit",
        "access.elevation",
        "access.self-edit",
    ]
    assert _refusals(running, "access.self-edit") == 2
    assert _refusals(running, "access.elevation") == 1


def test_an_elevation_needs_a_second_principal_with_the_approver_role(
    running: LocalFacility,
) -> None:
    alice, olivia, petra = (
        running.client("alice"),
        running.client("olivia"),
        running.client("petra"),
    )
    mark = last_audit_seq(running)
    filed = _ask(alice, pb.ELEVATION_KIND_TIER, "restricted")
    assert filed.state == pb.ACCESS_REQUEST_STATE_PENDING
    assert not _sees(alice, "sim-restricted")
    # The subject cannot approve, nor can an operator: the edge's roles table refuses both.
    _refused(lambda: _approve(alice, filed.request_id), "PERMISSION_DENIED", "role.required")
    _refused(lambda: _approve(olivia, filed.request_id), "PERMISSION_DENIED", "role.required")
    # An approver cannot approve a request they filed themselves.
    for_bob = _ask(petra, pb.ELEVATION_KIND_LICENCE, "EAR-4A906", principal="bob")
    _refused(lambda: _approve(petra, for_bob.request_id), "PERMISSION_DENIED", "access.own-request")
    assert not _sees(alice, "sim-restricted")
    granted = _approve(petra, filed.request_id)
    assert granted.state == pb.ACCESS_REQUEST_STATE_GRANTED
    assert [a.approver for a in granted.approvals] == ["petra"]
    assert _sees(alice, "sim-restricted")
    kinds = [e.kind for e in audit_entries(running, after_seq=mark) if e.kind.startswith("access.")]
    assert kinds == [
        "access.request.created",
        "access.request.created",
        "access.decision.refused",
        "access.request.granted",
    ]
    assert _refusals(running, "access.own-request") == 1


def test_an_expired_device_grant_refuses_the_next_dispatch(facility: LocalFacility) -> None:
    facility.start_broker()
    alice, petra = facility.client("alice"), facility.client("petra")
    _refused(
        lambda: alice.submit(ghz_qasm2(2), device_id="sim-restricted", shots=10),
        "NOT_FOUND",
        "",
    )
    filed = _ask(alice, pb.ELEVATION_KIND_DEVICE, "sim-restricted", seconds=10)
    grant = _approve(petra, filed.request_id)
    # Queued while the grant is in force; no driver is connected for the device yet.
    job = alice.submit(ghz_qasm2(2), device_id="sim-restricted", shots=10).job
    [expired] = eventually(
        lambda: (
            [
                e
                for e in audit_entries(facility, kind="access.request.expired")
                if e.detail["request"] == grant.request_id
            ]
            or None
        ),
        timeout=60,
        what="the broker's tick to expire the grant",
    )
    assert expired.subject == "alice"
    assert not _sees(alice, "sim-restricted")
    facility.start_driver("sim-restricted")
    denied = wait_state(alice, job.job_id, "DENIED")
    assert denied.rule_id == "researcher-dispatch/tier"
    assert [e.kind for e in audit_entries(facility, kind="job.dispatched")] == []


def test_break_glass_needs_two_security_principals(running: LocalFacility) -> None:
    alice, petra = running.client("alice"), running.client("petra")
    sam, sean = running.client("sam"), running.client("sean")
    filed = _ask(alice, pb.ELEVATION_KIND_TIER, "restricted", break_glass=True)
    _refused(lambda: _approve(petra, filed.request_id), "PERMISSION_DENIED", "access.break-glass")
    first = _approve(sam, filed.request_id)
    assert first.state == pb.ACCESS_REQUEST_STATE_PENDING
    _refused(lambda: _approve(sam, filed.request_id), "PERMISSION_DENIED", "access.break-glass")
    assert not _sees(alice, "sim-restricted")
    granted = _approve(sean, filed.request_id)
    assert granted.state == pb.ACCESS_REQUEST_STATE_GRANTED
    assert [a.approver for a in granted.approvals] == ["sam", "sean"]
    assert _sees(alice, "sim-restricted")
    too_long = pb.RequestAccessRequest(
        kind=pb.ELEVATION_KIND_ROLE,
        value="security",
        duration_seconds=2 * 86_400,
        reason="incident",
        break_glass=True,
    )
    refused = _refused(
        lambda: alice.call(alice.access_requests.RequestAccess, too_long), "INVALID_ARGUMENT", ""
    )
    assert "at most 1 day(s)" in refused.message
    entries = audit_entries(running)
    kinds = [e.kind for e in entries if e.subject == "alice" and e.kind.startswith("access.")]
    assert kinds[-3:] == [
        "access.request.approved",
        "access.decision.refused",
        "access.request.granted",
    ]


def test_a_granted_role_reaches_the_edge_until_it_is_revoked(facility: LocalFacility) -> None:
    facility.start_broker()
    bob, petra = facility.client("bob"), facility.client("petra")

    def list_credentials() -> object:
        return bob.call(bob.credentials.ListCredentials, credentials_pb2.ListCredentialsRequest())

    _refused(list_credentials, "PERMISSION_DENIED", "role.required")
    filed = _ask(bob, pb.ELEVATION_KIND_ROLE, "security")
    _approve(petra, filed.request_id)
    list_credentials()  # the edge's roles table sees the granted role
    revoke = pb.DecideAccessRequest(request_id=filed.request_id, reason="incident closed")
    revoked = petra.call(petra.access_requests.RevokeGrant, revoke)
    assert revoked.state == pb.ACCESS_REQUEST_STATE_REVOKED
    _refused(list_credentials, "PERMISSION_DENIED", "role.required")
    entries = audit_entries(facility)
    kinds = [e.kind for e in entries if e.subject == "bob" and e.kind.startswith("access.")]
    assert kinds[-3:] == [
        "access.request.created",
        "access.request.granted",
        "access.request.revoked",
    ]
