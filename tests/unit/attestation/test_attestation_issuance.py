"""Client credentials from a CSR: the key from the request, the name from the operator, the
usage and lifetime from the issuer; renewal keeps the key and the name."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from attestation.clients import verify_client_certificate
from attestation.issuance import (
    DEFAULT_CLIENT_DAYS,
    MAX_CLIENT_DAYS,
    IssuanceError,
    create_csr,
    issue_client_certificate_from_csr,
    read_csr,
    renew_client_certificate,
)
from attestation.keys import KeyKind, SigningKey, VerifyKey
from attestation.pki import cert_to_pem, create_ca, create_intermediate, serial_hex

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
CAROL = "qtestbed://demo/principal/carol"


class Cas:
    def __init__(self) -> None:
        self.root_key = SigningKey.generate(KeyKind.ECDSA_P256)
        self.root = create_ca("root", self.root_key, now=NOW, days=3650, path_length=1)
        self.key = SigningKey.generate(KeyKind.ECDSA_P256)
        self.clients = self._issuing("clients", self.key, [ExtendedKeyUsageOID.CLIENT_AUTH])
        self.devices_key = SigningKey.generate(KeyKind.ECDSA_P256)
        self.devices = self._issuing("devices", self.devices_key, [])

    def _issuing(
        self, name: str, key: SigningKey, usage: list[x509.ObjectIdentifier]
    ) -> x509.Certificate:
        return create_intermediate(
            name,
            key,
            parent_key=self.root_key,
            parent_cert=self.root,
            now=NOW,
            days=3650,
            extended_key_usage=usage,
        )

    def issue(
        self,
        csr: bytes,
        *,
        ca_key: SigningKey | None = None,
        ca_cert: x509.Certificate | None = None,
        principal_uri: str = CAROL,
        now: dt.datetime = NOW,
        days: int = DEFAULT_CLIENT_DAYS,
    ) -> x509.Certificate:
        return issue_client_certificate_from_csr(
            csr,
            ca_key=ca_key or self.key,
            ca_cert=ca_cert or self.clients,
            principal_uri=principal_uri,
            common_name="carol",
            now=now,
            days=days,
        )


@pytest.fixture(scope="module")
def cas() -> Cas:
    return Cas()


@pytest.fixture(scope="module")
def carol_key() -> SigningKey:
    return SigningKey.generate(KeyKind.ECDSA_P256)


def test_csr_names_the_principal_and_proves_the_key(carol_key: SigningKey) -> None:
    request = read_csr(create_csr(carol_key, CAROL, common_name="carol"))
    assert request.public_key == carol_key.public_key
    assert request.uris == (CAROL,)
    assert request.common_name == "carol"


def test_csr_needs_a_p256_key() -> None:
    with pytest.raises(ValueError, match="P-256"):
        create_csr(SigningKey.generate(KeyKind.ED25519), CAROL)


def test_issued_certificate_is_a_short_lived_client_credential_for_the_csr_key(
    cas: Cas, carol_key: SigningKey
) -> None:
    cert = cas.issue(create_csr(carol_key, CAROL, common_name="carol"))
    assert VerifyKey.from_cryptography(cert.public_key()) == carol_key.public_key
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime == dt.timedelta(days=DEFAULT_CLIENT_DAYS)
    assert cert.not_valid_before_utc <= NOW  # backdated a little for clock skew
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca is False
    # The edge's own check accepts it and reads the principal from it.
    verified = verify_client_certificate(cert_to_pem(cert), cas.clients, now=NOW)
    assert verified.uris == (CAROL,)
    assert verified.serial == serial_hex(cert)


def test_serials_are_random(cas: Cas, carol_key: SigningKey) -> None:
    csr = create_csr(carol_key, CAROL)
    serials = {cas.issue(csr).serial_number for _ in range(5)}
    assert len(serials) == 5
    assert all(s.bit_length() > 64 for s in serials)


def test_the_operator_names_the_principal_not_the_csr(cas: Cas, carol_key: SigningKey) -> None:
    # A CSR without names gets exactly what the operator names.
    bare = create_csr(carol_key, CAROL)
    unnamed = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(carol_key.cryptography_key, hashes.SHA256())
    )
    cert = cas.issue(unnamed.public_bytes(Encoding.PEM))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [CAROL]
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "carol"
    assert cas.issue(bare).subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "carol"


@pytest.mark.parametrize(
    ("uri", "cn", "message"),
    [
        ("qtestbed://demo/principal/olivia", None, "asks for qtestbed://demo/principal/olivia"),
        ("qtestbed://other/principal/carol", None, "right facility id"),
        (CAROL, "olivia", "names 'olivia'"),
    ],
)
def test_a_csr_asking_for_another_name_is_refused(
    cas: Cas, carol_key: SigningKey, uri: str, cn: str | None, message: str
) -> None:
    with pytest.raises(IssuanceError, match=message):
        cas.issue(create_csr(carol_key, uri, common_name=cn))


def test_a_csr_asking_for_several_names_is_refused(cas: Cas, carol_key: SigningKey) -> None:
    both = [x509.UniformResourceIdentifier(CAROL), x509.UniformResourceIdentifier("urn:x:y")]
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.SubjectAlternativeName(both), critical=False)
        .sign(carol_key.cryptography_key, hashes.SHA256())
    )
    with pytest.raises(IssuanceError, match="urn:x:y"):
        cas.issue(csr.public_bytes(Encoding.PEM))


def test_a_tampered_csr_is_refused(cas: Cas, carol_key: SigningKey) -> None:
    # The request body changed after it was signed (carol -> carom): its signature fails.
    der = x509.load_pem_x509_csr(create_csr(carol_key, CAROL)).public_bytes(Encoding.DER)
    tampered = der.replace(b"carol", b"carom", 1)
    assert tampered != der
    body = base64.encodebytes(tampered)
    pem = b"-----BEGIN CERTIFICATE REQUEST-----\n" + body + b"-----END CERTIFICATE REQUEST-----\n"
    with pytest.raises(IssuanceError, match="signature does not verify"):
        cas.issue(pem, principal_uri="qtestbed://demo/principal/carom")


def test_garbage_is_not_a_csr(cas: Cas) -> None:
    with pytest.raises(IssuanceError, match="not a PEM certificate signing request"):
        cas.issue(b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n")
    with pytest.raises(IssuanceError, match="over"):
        cas.issue(b"x" * 20000)


def test_an_ed25519_csr_is_refused(cas: Cas) -> None:
    key = SigningKey.generate(KeyKind.ED25519)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key.cryptography_key, None)
    )
    with pytest.raises(IssuanceError, match="P-256"):
        cas.issue(csr.public_bytes(Encoding.PEM))


@pytest.mark.parametrize("days", [0, -1, MAX_CLIENT_DAYS + 1])
def test_lifetime_is_bounded(cas: Cas, carol_key: SigningKey, days: int) -> None:
    with pytest.raises(IssuanceError, match="days"):
        cas.issue(create_csr(carol_key, CAROL), days=days)


def test_lifetime_is_configurable_within_the_bound(cas: Cas, carol_key: SigningKey) -> None:
    cert = cas.issue(create_csr(carol_key, CAROL), days=7)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(days=7)


def test_a_certificate_never_outlives_its_ca(cas: Cas, carol_key: SigningKey) -> None:
    late = NOW + dt.timedelta(days=3650 - 10)
    with pytest.raises(IssuanceError, match="CA expires"):
        cas.issue(create_csr(carol_key, CAROL), now=late, days=30)


@pytest.mark.parametrize("which", ["root", "devices"])
def test_only_the_client_issuing_ca_issues_credentials(
    cas: Cas, carol_key: SigningKey, which: str
) -> None:
    key, cert = (cas.root_key, cas.root) if which == "root" else (cas.devices_key, cas.devices)
    with pytest.raises(IssuanceError, match="client-issuing CA"):
        cas.issue(create_csr(carol_key, CAROL), ca_key=key, ca_cert=cert)


def test_renewal_keeps_key_and_name_with_a_new_serial_and_lifetime(
    cas: Cas, carol_key: SigningKey
) -> None:
    old = cas.issue(create_csr(carol_key, CAROL, common_name="carol"), days=1)
    later = NOW + dt.timedelta(days=20)  # the old one has expired: renewal still works
    new = renew_client_certificate(
        cert_to_pem(old), ca_key=cas.key, ca_cert=cas.clients, now=later, days=10
    )
    assert new.serial_number != old.serial_number
    assert VerifyKey.from_cryptography(new.public_key()) == carol_key.public_key
    assert new.subject == old.subject
    verified = verify_client_certificate(cert_to_pem(new), cas.clients, now=later)
    assert verified.uris == (CAROL,)
    assert new.not_valid_after_utc == later - dt.timedelta(minutes=5) + dt.timedelta(days=10)


def test_renewal_refuses_a_certificate_from_another_ca(cas: Cas, carol_key: SigningKey) -> None:
    other = Cas()
    old = other.issue(create_csr(carol_key, CAROL))
    with pytest.raises(IssuanceError, match="not issued by this client-issuing CA"):
        renew_client_certificate(cert_to_pem(old), ca_key=cas.key, ca_cert=cas.clients, now=NOW)
