from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from attestation.keys import KeyKind, SigningKey
from attestation.pki import (
    CertificateError,
    cert_from_pem,
    cert_to_pem,
    create_ca,
    device_uri,
    issue_certificate,
    verify_device_certificate,
)

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)


def _ca(key: SigningKey, name: str = "qtestbed facility CA") -> x509.Certificate:
    return create_ca(name, key, now=NOW, days=365)


def _device_cert(
    ca_key: SigningKey,
    ca: x509.Certificate,
    device_key: SigningKey,
    *,
    uris: tuple[str, ...] = (device_uri("qpu-1"),),
    now: dt.datetime = NOW,
    days: int = 30,
) -> bytes:
    cert = issue_certificate(
        ca_key=ca_key,
        ca_cert=ca,
        subject_cn="qpu-1",
        public_key=device_key.public_key,
        now=now,
        days=days,
        uris=uris,
        client=True,
    )
    return cert_to_pem(cert)


def test_device_uri() -> None:
    assert device_uri("qpu-1") == "urn:qtestbed:device:qpu-1"


@pytest.mark.parametrize("ca_kind", list(KeyKind))
def test_issue_and_verify_device_certificate(ca_kind: KeyKind, device_key: SigningKey) -> None:
    ca_key = SigningKey.generate(ca_kind)
    ca = _ca(ca_key)
    pem = _device_cert(ca_key, ca, device_key)
    device_id, key = verify_device_certificate(pem, cert_to_pem(ca), now=NOW + dt.timedelta(days=1))
    assert device_id == "qpu-1"
    assert key == device_key.public_key


def test_ca_certificate_extensions(p256_key: SigningKey) -> None:
    ca = _ca(p256_key)
    assert ca.subject == ca.issuer
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    ca.verify_directly_issued_by(ca)  # self-signed


def test_tls_server_certificate_extensions(p256_key: SigningKey) -> None:
    ca = _ca(p256_key)
    tls_key = SigningKey.generate(KeyKind.ECDSA_P256)
    cert = issue_certificate(
        ca_key=p256_key,
        ca_cert=ca,
        subject_cn="broker",
        public_key=tls_key.public_key,
        now=NOW,
        days=30,
        dns_names=["localhost", "broker.example"],
        ip_addresses=["127.0.0.1", "::1"],
        server=True,
    )
    cert.verify_directly_issued_by(ca)
    ext = cert.extensions
    assert not ext.get_extension_for_class(x509.BasicConstraints).value.ca
    assert list(ext.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH
    ]
    san = ext.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "broker.example"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest
    ski = ext.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(tls_key.public_key.cryptography_key)


def test_client_and_server_usage_together(p256_key: SigningKey, device_key: SigningKey) -> None:
    ca = _ca(p256_key)
    cert = issue_certificate(
        ca_key=p256_key,
        ca_cert=ca,
        subject_cn="agent",
        public_key=device_key.public_key,
        now=NOW,
        days=1,
        server=True,
        client=True,
    )
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)


def test_expired_certificate(p256_key: SigningKey, device_key: SigningKey) -> None:
    ca = _ca(p256_key)
    pem = _device_cert(p256_key, ca, device_key, days=30)
    with pytest.raises(CertificateError, match="expired"):
        verify_device_certificate(pem, cert_to_pem(ca), now=NOW + dt.timedelta(days=31))


def test_not_yet_valid_certificate(p256_key: SigningKey, device_key: SigningKey) -> None:
    ca = _ca(p256_key)
    pem = _device_cert(p256_key, ca, device_key, now=NOW + dt.timedelta(days=10))
    with pytest.raises(CertificateError, match="not yet valid"):
        verify_device_certificate(pem, cert_to_pem(ca), now=NOW + dt.timedelta(days=9))


@pytest.mark.parametrize("same_name", [True, False])
def test_certificate_from_another_ca(
    p256_key: SigningKey, device_key: SigningKey, same_name: bool
) -> None:
    ours = _ca(p256_key)
    rogue_key = SigningKey.generate(KeyKind.ECDSA_P256)
    rogue = _ca(rogue_key, "qtestbed facility CA" if same_name else "rogue CA")
    pem = _device_cert(rogue_key, rogue, device_key)
    with pytest.raises(CertificateError, match="not signed by this CA"):
        verify_device_certificate(pem, cert_to_pem(ours), now=NOW)


def test_certificate_without_device_uri(p256_key: SigningKey, device_key: SigningKey) -> None:
    ca = _ca(p256_key)
    for uris in [(), ("https://example.com/qpu-1",), ("urn:qtestbed:device:",)]:
        pem = _device_cert(p256_key, ca, device_key, uris=uris)
        with pytest.raises(CertificateError, match="no urn:qtestbed:device:<id> URI"):
            verify_device_certificate(pem, cert_to_pem(ca), now=NOW)


def test_certificate_naming_two_devices(p256_key: SigningKey, device_key: SigningKey) -> None:
    ca = _ca(p256_key)
    pem = _device_cert(p256_key, ca, device_key, uris=(device_uri("a"), device_uri("b")))
    with pytest.raises(CertificateError, match="more than one device"):
        verify_device_certificate(pem, cert_to_pem(ca), now=NOW)


def test_expired_ca(p256_key: SigningKey, device_key: SigningKey) -> None:
    ca = create_ca("short-lived", p256_key, now=NOW, days=1)
    pem = _device_cert(p256_key, ca, device_key, days=30)
    with pytest.raises(CertificateError, match="CA certificate expired"):
        verify_device_certificate(pem, cert_to_pem(ca), now=NOW + dt.timedelta(days=2))


def test_end_entity_certificate_is_not_a_trust_anchor(
    p256_key: SigningKey, device_key: SigningKey
) -> None:
    ca = _ca(p256_key)
    pem = _device_cert(p256_key, ca, device_key)
    with pytest.raises(CertificateError, match="not a CA"):
        verify_device_certificate(pem, pem, now=NOW)


def test_pem_round_trip_and_garbage(p256_key: SigningKey) -> None:
    ca = _ca(p256_key)
    assert cert_from_pem(cert_to_pem(ca)) == ca
    with pytest.raises(CertificateError, match="not a PEM certificate"):
        cert_from_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")


def test_naive_datetimes_are_refused(p256_key: SigningKey) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        create_ca("ca", p256_key, now=dt.datetime(2025, 6, 1), days=1)


def test_ca_key_must_match_ca_cert(p256_key: SigningKey, device_key: SigningKey) -> None:
    ca = _ca(p256_key)
    with pytest.raises(ValueError, match="ca_key is not the key of ca_cert"):
        issue_certificate(
            ca_key=device_key,
            ca_cert=ca,
            subject_cn="x",
            public_key=device_key.public_key,
            now=NOW,
            days=1,
        )
