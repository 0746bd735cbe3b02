"""Access requests as data: state transitions in one place, the stored JSON and the API message
round trips, and the effective principal (a record raised by the grants in force, and only
those, until the second each expires)."""

from __future__ import annotations

import dataclasses

import pytest

from broker.access.documents import access_request_from_doc, access_request_to_doc
from broker.access.facility import Facility
from broker.access.grants import effective
from broker.access.model import AccessError, AccessRequest, Elevation, Principal, RequestState, Role
from broker.errors import BrokerError, ErrorCode
from broker.grpc.codec.grants import access_request_to_proto, filing_from_proto
from qtestbed.shared.wire import seconds
from qtestbed.v1 import grants_pb2 as pb

FACILITY = Facility(
    name="t",
    tiers=("open", "controlled", "restricted"),
    principals={},
    projects=(),
    seed_devices=(),
    ca_pem=b"",
)
ALICE = Principal(name="alice", tier="open", roles=frozenset({Role.RESEARCHER}))


def _request(
    kind: Elevation = Elevation.TIER, value: str = "controlled", **changes: object
) -> AccessRequest:
    base = AccessRequest(
        request_id="ar-1",
        principal="alice",
        requested_by="alice",
        kind=kind,
        value=value,
        duration_seconds=100.0,
        reason="survey",
        created_at=1_000.0,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def _grant(
    kind: Elevation = Elevation.TIER, value: str = "controlled", at: float = 1_000.0
) -> AccessRequest:
    return _request(kind, value).approved("petra", at, "ok")


def test_one_approval_grants_a_normal_request_from_its_time() -> None:
    grant = _grant(at=1_050.0)
    assert (grant.state, grant.decided_by, grant.expires_at) == (
        RequestState.GRANTED,
        "petra",
        1_150.0,
    )
    assert grant.in_force(1_149.999)
    assert not grant.in_force(1_150.0)


def test_break_glass_is_granted_at_the_second_approval() -> None:
    first = _request(break_glass=True).approved("sam", 1_010.0, "a")
    assert (first.state, first.expires_at) == (RequestState.PENDING, None)
    second = first.approved("sue", 1_020.0, "b")
    assert (second.state, second.expires_at) == (RequestState.GRANTED, 1_120.0)


@pytest.mark.parametrize(
    "step",
    [
        lambda r: r.approved("x", 1.0, ""),
        lambda r: r.denied("x", 1.0, "no"),
        lambda r: r.expired(1.0),
    ],
    ids=["approve", "deny", "expire"],
)
def test_a_closed_request_cannot_move_again(step: object) -> None:
    denied = _request().denied("petra", 1_010.0, "no")
    with pytest.raises(AccessError):
        step(denied)  # type: ignore[operator]
    with pytest.raises(AccessError):
        _request().revoked("olivia", 1.0, "x")  # only a grant is revoked


def test_a_role_request_is_for_a_grantable_role_only() -> None:
    with pytest.raises(AccessError, match="one of approver, operator, scraper, security"):
        _request(Elevation.ROLE, "researcher")


@pytest.mark.parametrize(
    "request_",
    [
        _request(),
        _request(break_glass=True).approved("sam", 1_001.0, "a"),
        _grant(Elevation.DEVICE, "qpu-9"),
        _grant().revoked("olivia", 1_010.0, "done"),
        _grant(Elevation.LICENCE, "EAR-4A906").expired(1_200.0),
        _request(Elevation.ROLE, "security").denied("petra", 1_005.0, "no"),
    ],
    ids=["pending", "half-approved", "granted", "revoked", "expired", "denied"],
)
def test_the_stored_document_round_trips(request_: AccessRequest) -> None:
    assert access_request_from_doc(request_.request_id, access_request_to_doc(request_)) == request_


def test_an_unreadable_document_is_refused_naming_the_request() -> None:
    doc = access_request_to_doc(_request()) | {"state": "approved-ish"}
    with pytest.raises(AccessError, match="access request 'ar-1'"):
        access_request_from_doc("ar-1", doc)


def test_the_api_message_carries_every_field() -> None:
    grant = _request(break_glass=True).approved("sam", 1_001.0, "a").approved("sue", 1_002.0, "b")
    message = access_request_to_proto(grant)
    assert (message.request_id, message.principal, message.value) == ("ar-1", "alice", "controlled")
    assert message.kind == pb.ELEVATION_KIND_TIER
    assert message.state == pb.ACCESS_REQUEST_STATE_GRANTED
    assert [a.approver for a in message.approvals] == ["sam", "sue"]
    assert seconds(message.expires_at) == 1_102.0
    assert message.break_glass


def test_a_filing_without_a_kind_is_invalid_argument() -> None:
    with pytest.raises(BrokerError) as refused:
        filing_from_proto(pb.RequestAccessRequest(value="x", duration_seconds=1, reason="r"))
    assert refused.value.code is ErrorCode.INVALID_ARGUMENT
    filing = filing_from_proto(
        pb.RequestAccessRequest(kind=pb.ELEVATION_KIND_DEVICE, value="q", duration_seconds=9)
    )
    assert (filing.kind, filing.value, filing.duration_seconds) == (Elevation.DEVICE, "q", 9.0)


def test_the_effective_principal_takes_every_grant_in_force_and_only_those() -> None:
    grants = [
        _grant(Elevation.TIER, "restricted"),
        _grant(Elevation.TIER, "controlled"),
        _grant(Elevation.ROLE, "operator"),
        _grant(Elevation.LICENCE, "EAR-4A906"),
        _grant(Elevation.DEVICE, "qpu-9"),
        _request(Elevation.ROLE, "security"),  # pending: nothing
        _grant(Elevation.ROLE, "approver").revoked("olivia", 1_001.0, "x"),
        dataclasses.replace(_grant(Elevation.DEVICE, "qpu-x"), principal="bob"),
    ]
    now = effective(ALICE, grants, 1_050.0, FACILITY)
    assert now.principal.tier == "restricted"
    assert now.principal.roles == {Role.RESEARCHER, Role.OPERATOR}
    assert now.principal.licences == {"EAR-4A906"}
    assert now.granted_devices == {"qpu-9"}
    later = effective(ALICE, grants, 1_100.0, FACILITY)  # every grant ran out at 1_100
    assert later.principal == ALICE
    assert later.granted_devices == frozenset()
