"""Identity holds against whoever holds one legitimate thing: a vendor's delegated CA, a
device's certificate, a certificate for another facility, a revoked credential. Each is
refused on a real broker, counted by reason and audited in aggregate; the identity is the
certificate's URI name from the client-issuing CA, never its common name."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from attestation.keys import KeyKind, SigningKey
from attestation.pki import cert_to_pem, device_uri, issue_certificate
from qtestbed.client import Client, QtestbedError
from qtestbed.testing import LocalFacility, eventually
from qtestbed.v1 import access_pb2, credentials_pb2, credentials_pb2_grpc
from tests.integration.identity_kit import Minter
from tests.integration.support import audit_entries, metric_value, scrape


@pytest.fixture
def facility(tmp_path: Path) -> Iterator[LocalFacility]:
    with LocalFacility(
        tmp_path / "facility",
        timing={"front_door_audit_seconds": 0.3},
        anomaly={"refusal_threshold": 4},
    ) as fac:
        fac.start_broker()
        yield fac


@pytest.fixture
def minter(facility: LocalFacility, tmp_path: Path) -> Minter:
    return Minter(facility, tmp_path / "minted")


def _refused(client: Client) -> QtestbedError:
    with pytest.raises(QtestbedError) as refused:
        client.call(client.access.ListPrincipals, access_pb2.ListPrincipalsRequest())
    return refused.value


def _refusals(facility: LocalFacility, reason: str) -> float:
    return metric_value(scrape(facility), "qtestbed_front_door_refusals_total", reason=reason)


def _audited(facility: LocalFacility, reason: str, who: str = "") -> int:
    """Refusals of `reason` (by `who`, if given) the aggregated audit entries add up to."""

    def counted() -> int | None:
        rows = [
            row
            for row in audit_entries(facility, kind="edge.refused")
            if row.detail["reason"] == reason and (not who or row.subject == who)
        ]
        return sum(int(row.detail["count"]) for row in rows) or None

    return eventually(counted, timeout=20, what=f"an edge.refused entry for {reason}")


@pytest.mark.parametrize("issuer", ["devices", "root", "vendor"])
def test_an_operator_certificate_from_any_other_ca_is_refused(
    facility: LocalFacility, minter: Minter, issuer: str
) -> None:
    ca = minter.vendor_ca() if issuer == "vendor" else issuer
    forged, _ = minter.client(issuer=ca, name="olivia")
    refused = _refused(forged)
    assert refused.code == "UNAUTHENTICATED"
    assert "client-issuing CA" in refused.message
    assert _refusals(facility, "wrong_issuer") == 1
    assert _audited(facility, "wrong_issuer") == 1


def test_a_device_certificate_used_as_a_client_is_refused(
    facility: LocalFacility, minter: Minter
) -> None:
    # A P-256 device key passes the TLS handshake as a client (an Ed25519 one does not).
    key = SigningKey.generate(KeyKind.ECDSA_P256)
    ca_key, ca_cert = minter.cas["devices"]
    cert = issue_certificate(
        ca_key=ca_key,
        ca_cert=ca_cert,
        subject_cn="olivia",
        public_key=key.public_key,
        now=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5),
        days=1,
        uris=[device_uri("sim-open")],
    )
    client = minter.profile(cert_to_pem(cert) + cert_to_pem(ca_cert), key)
    with pytest.raises(QtestbedError) as refused:
        client.devices()
    assert refused.value.code == "UNAUTHENTICATED"
    assert _refusals(facility, "wrong_issuer") == 1


def test_a_certificate_without_client_authentication_is_refused(
    facility: LocalFacility, minter: Minter
) -> None:
    client, _ = minter.client(name="alice", client_auth=False)
    with pytest.raises(QtestbedError) as refused:
        client.devices()
    assert refused.value.code == "UNAUTHENTICATED"
    assert _refusals(facility, "wrong_usage") == 1


def test_the_identity_is_the_uri_name_never_the_common_name(
    facility: LocalFacility, minter: Minter
) -> None:
    alice_as_olivia, _ = minter.client(name="alice", common_name="olivia")
    refused = _refused(alice_as_olivia)  # an operator call: alice holds no operator role
    assert refused.code == "PERMISSION_DENIED"
    assert _refusals(facility, "role_required") == 1
    other_facility, _ = minter.client(name="olivia", facility_id="elsewhere")
    assert _refused(other_facility).code == "UNAUTHENTICATED"
    assert _refusals(facility, "no_principal") == 1


def test_an_unknown_principal_is_refused_counted_audited_and_its_repeats_raise_an_anomaly(
    facility: LocalFacility, minter: Minter
) -> None:
    mallory, _ = minter.client(name="mallory")
    for _ in range(5):
        with pytest.raises(QtestbedError) as refused:
            mallory.devices()
        assert refused.value.code == "UNAUTHENTICATED"
    assert _refusals(facility, "unknown_principal") == 5
    assert _audited(facility, "unknown_principal", "mallory") == 5
    text = scrape(facility)
    assert metric_value(text, "qtestbed_anomalies_total", detector="front_door_refusal_burst") == 1


def test_a_revoked_credential_is_refused_on_the_next_call_and_its_stream_ends(
    facility: LocalFacility, minter: Minter
) -> None:
    alice, serial = minter.client(name="alice")
    job = alice.submit(
        b"OPENQASM 2.0;\nqreg q[1];\ncreg c[1];\nmeasure q -> c;\n", device_id="sim-open", shots=10
    ).job
    watch = alice.watch(job.job_id, timeout=30)
    assert next(watch).job_id == job.job_id  # the stream is open
    sam = facility.client("sam")
    revoked = sam.call(
        _credentials(sam).RevokeCredential,
        credentials_pb2.RevokeCredentialRequest(serial=serial, reason="laptop stolen"),
    )
    assert revoked.revoked
    with pytest.raises(QtestbedError) as refused:
        alice.get_job(job.job_id)
    assert refused.value.code == "UNAUTHENTICATED"
    assert "revoked" in refused.value.message
    with pytest.raises(QtestbedError) as ended:
        for _ in watch:
            pass
    assert ended.value.code == "UNAUTHENTICATED"
    assert _refusals(facility, "revoked") >= 1
    assert _audited(facility, "revoked", "alice") >= 1
    kinds = [row.kind for row in audit_entries(facility)]
    assert "access.credential.revoked" in kinds
    # alice's other credential (the one qtestbed init issued) is untouched.
    assert facility.client("alice").get_job(job.job_id).job_id == job.job_id


def _credentials(client: Client) -> credentials_pb2_grpc.CredentialServiceStub:
    return credentials_pb2_grpc.CredentialServiceStub(client.channel)
