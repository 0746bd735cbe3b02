"""The facility's X.509 PKI: a CA (the RATS Endorser) that vouches for device and TLS keys.

A device certificate carries the device id as a URI SAN (`urn:qtestbed:device:<id>`) and the
device's Ed25519 attestation key; TLS certificates carry P-256 keys. All times are passed in and
must be timezone-aware, so a naive local time can never shift a validity window by hours.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from attestation.keys import KeyKind, SigningKey, VerifyKey

DEVICE_URI_PREFIX = "urn:qtestbed:device:"


class CertificateError(ValueError):
    """A certificate is unusable; the message says why (issuer, validity, missing device URI)."""


def device_uri(device_id: str) -> str:
    return DEVICE_URI_PREFIX + device_id


def cert_to_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def cert_from_pem(data: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise CertificateError(f"not a PEM certificate: {exc}") from exc


def _aware(now: dt.datetime) -> dt.datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime (for example in dt.UTC)")
    return now


def _sign(builder: x509.CertificateBuilder, key: SigningKey) -> x509.Certificate:
    # Ed25519 hashes internally and must be given no hash algorithm; ECDSA is paired with SHA-256.
    algorithm = None if key.kind is KeyKind.ED25519 else hashes.SHA256()
    return builder.sign(key.cryptography_key, algorithm)


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def create_ca(
    common_name: str, key: SigningKey, *, now: dt.datetime, days: int
) -> x509.Certificate:
    """A self-signed CA that may sign end-entity certificates only (path length 0)."""
    start = _aware(now)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    public = key.public_key.cryptography_key
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )
    return _sign(builder, key)


def issue_certificate(
    *,
    ca_key: SigningKey,
    ca_cert: x509.Certificate,
    subject_cn: str,
    public_key: VerifyKey,
    now: dt.datetime,
    days: int,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    uris: Sequence[str] = (),
    server: bool = False,
    client: bool = False,
) -> x509.Certificate:
    """An end-entity certificate for `public_key`, signed by the CA."""
    start = _aware(now)
    if VerifyKey.from_cryptography(ca_cert.public_key()) != ca_key.public_key:
        raise ValueError("ca_key is not the key of ca_cert")
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
        .issuer_name(ca_cert.subject)
        .public_key(public_key.cryptography_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(public_key.cryptography_key), critical=False
        )
        .add_extension(_authority_key_id(ca_cert, ca_key), critical=False)
    )
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] * server + [ExtendedKeyUsageOID.CLIENT_AUTH] * client
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    names = _general_names(dns_names, ip_addresses, uris)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return _sign(builder, ca_key)


def _authority_key_id(ca_cert: x509.Certificate, ca_key: SigningKey) -> x509.AuthorityKeyIdentifier:
    # Reuse the CA's own SKI when it has one, so path builders match the two byte for byte.
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        public = ca_key.public_key.cryptography_key
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(public)
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _general_names(
    dns_names: Sequence[str], ip_addresses: Sequence[str], uris: Sequence[str]
) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    names += [x509.UniformResourceIdentifier(u) for u in uris]
    return names


def verify_device_certificate(
    cert_pem: bytes, ca_pem: bytes, *, now: dt.datetime
) -> tuple[str, VerifyKey]:
    """The device id and attestation key vouched for by the CA, or `CertificateError` saying why."""
    when = _aware(now)
    cert = cert_from_pem(cert_pem)
    ca = cert_from_pem(ca_pem)
    _check_ca(ca, when)
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise CertificateError("certificate is not signed by this CA") from exc
    _check_validity(cert, when, "certificate")
    device_id = _device_id(cert)
    try:
        key = VerifyKey.from_cryptography(cert.public_key())
    except ValueError as exc:
        raise CertificateError(f"device certificate key: {exc}") from exc
    return device_id, key


def _check_ca(ca: x509.Certificate, when: dt.datetime) -> None:
    try:
        constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise CertificateError("the trust anchor is not a CA certificate")
    _check_validity(ca, when, "CA certificate")


def _check_validity(cert: x509.Certificate, when: dt.datetime, what: str) -> None:
    if when < cert.not_valid_before_utc:
        raise CertificateError(f"{what} is not yet valid (from {cert.not_valid_before_utc})")
    if when > cert.not_valid_after_utc:
        raise CertificateError(f"{what} expired at {cert.not_valid_after_utc}")


def _device_id(cert: x509.Certificate) -> str:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = x509.SubjectAlternativeName([])
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    ids = [u.removeprefix(DEVICE_URI_PREFIX) for u in uris if u.startswith(DEVICE_URI_PREFIX)]
    if not ids or not ids[0]:
        raise CertificateError(f"certificate has no {DEVICE_URI_PREFIX}<id> URI")
    # Two device URIs would make the certificate vouch for two devices; refuse to choose one.
    if len(ids) > 1:
        raise CertificateError("certificate names more than one device")
    return ids[0]
