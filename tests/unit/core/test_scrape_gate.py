"""Who may read /metrics, decided on the wired core: the gRPC edge's identity checks, then the
scraper role as the access registry holds it now; every refusal counted by reason. And how the
endpoint names a failed TLS handshake."""

from __future__ import annotations

import datetime as dt
import ssl

import pytest

from attestation.keys import KeyKind, SigningKey
from attestation.pki import cert_to_pem, issue_certificate
from broker.access.model import AccessRequest, Elevation, Principal, Role
from broker.errors import BrokerError, ErrorCode
from broker.scrape.gate import ScrapeGate
from broker.scrape.tls import handshake_reason
from qtestbed.shared.identity import principal_uri
from tests.unit.core.harness import Core, events, granted, metric

REFUSALS = "qtestbed_front_door_refusals_total"


def _gate(core: Core) -> ScrapeGate:
    return core.parts.scrape


def _cert(core: Core, name: str) -> bytes:
    """A client certificate from the core's client-issuing CA naming `name`, as PEM."""
    key = SigningKey.generate(KeyKind.ECDSA_P256)
    facility_id = core.parts.base.facility.current.facility_id
    cert = issue_certificate(
        ca_key=core.ca_key,
        ca_cert=core.ca,
        subject_cn=name,
        public_key=key.public_key,
        now=dt.datetime.fromtimestamp(core.clock.now(), dt.UTC) - dt.timedelta(minutes=5),
        days=1,
        client=True,
        uris=[principal_uri(facility_id, name)],
    )
    return cert_to_pem(cert)


async def _add_scraper(core: Core) -> AccessRequest:
    """A monitoring principal, given the scraper role through an approved access request (an
    edit cannot add it: the role reads metrics that name hidden devices)."""
    monitor = Principal(
        name="monitor", tier="open", roles=frozenset({Role.RESEARCHER}), projects=("ops",)
    )
    await core.parts.registries.access.put_principal("olivia", monitor, 0)
    return await granted(core, "monitor", Elevation.ROLE, "scraper")


async def _refused(core: Core, pems: list[bytes]) -> BrokerError:
    with pytest.raises(BrokerError) as refused:
        await _gate(core).admit(pems)
    return refused.value


async def test_a_scraper_is_admitted_and_nobody_else(core: Core) -> None:
    await _add_scraper(core)
    caller = await _gate(core).admit([_cert(core, "monitor")])
    assert caller.principal.name == "monitor"

    researcher = await _refused(core, [_cert(core, "alice")])
    assert researcher.code is ErrorCode.PERMISSION_DENIED
    assert "scraper" in researcher.detail
    assert metric(core, REFUSALS, reason="role_required") == 1
    operator = await _refused(core, [_cert(core, "olivia")])  # operators do not read it either
    assert operator.code is ErrorCode.PERMISSION_DENIED
    assert metric(core, REFUSALS, reason="role_required") == 2

    for pems, reason in (([], "no_certificate"), ([_cert(core, "mallory")], "unknown_principal")):
        refused = await _refused(core, pems)
        assert refused.code is ErrorCode.UNAUTHENTICATED
        assert metric(core, REFUSALS, reason=reason) == 1


async def test_the_role_is_read_from_the_registry_at_each_scrape(core: Core) -> None:
    grant = await _add_scraper(core)
    pem = _cert(core, "monitor")
    await _gate(core).admit([pem])
    await core.parts.registries.requests.revoke("olivia", grant.request_id, "host retired")
    assert (await _refused(core, [pem])).code is ErrorCode.PERMISSION_DENIED
    await granted(core, "monitor", Elevation.ROLE, "scraper")
    assert (await _gate(core).admit([pem])).principal.name == "monitor"


async def test_an_edit_cannot_make_a_scraper(core: Core) -> None:
    """Adding the scraper role is an elevation: an operator's edit is refused."""
    scraper = Principal(
        name="monitor", tier="open", roles=frozenset({Role.SCRAPER}), projects=("ops",)
    )
    with pytest.raises(BrokerError) as refused:
        await core.parts.registries.access.put_principal("olivia", scraper, 0)
    assert refused.value.rule_id == "access.elevation"
    assert "--role scraper" in refused.value.detail


async def test_refusals_before_identity_are_counted_without_one(core: Core) -> None:
    _gate(core).refused("busy")
    _gate(core).refused("deadline")
    assert metric(core, REFUSALS, reason="busy") == 1
    assert metric(core, REFUSALS, reason="deadline") == 1
    await core.parts.registries.front_door.flush(force=True)
    audited = events(core, "edge.refused")
    assert sorted((e.subject, e.detail["reason"], e.detail["count"]) for e in audited) == [
        ("", "busy", 1),
        ("", "deadline", 1),
    ]


def _verify_error(code: int) -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(1, "certificate verify failed")
    exc.verify_code = code
    return exc


def _ssl_error(reason: str) -> ssl.SSLError:
    exc = ssl.SSLError(1, reason)
    exc.reason = reason
    return exc


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (_verify_error(10), "expired"),
        (_verify_error(9), "not_yet_valid"),
        (_verify_error(20), "bad_chain"),  # unable to get local issuer certificate
        (_ssl_error("PEER_DID_NOT_RETURN_A_CERTIFICATE"), "no_certificate"),
        (_ssl_error("HTTP_REQUEST"), "tls_other"),  # plain HTTP to the TLS port
        (ConnectionResetError(), "tls_other"),
    ],
)
def test_handshake_failures_are_named_as_at_the_grpc_edge(exc: BaseException, reason: str) -> None:
    assert handshake_reason(exc) == reason
