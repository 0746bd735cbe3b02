"""The facility's X.509 PKI: a CA (the RATS Endorser) that vouches for device and TLS keys.

A device certificate carries the device id as a URI SAN (`urn:qtestbed:device:<id>`) and the
device's attestation key (Ed25519 or P-256); the root CA signs it directly or through an
intermediate CA. All times are passed in and must be timezone-aware, so a naive local time can
never shift a validity window by hours. Chain validation lives in `attestation._chain` and is
exported from here.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from attestation._chain import (
    DEVICE_URI_PREFIX,
    MAX_CHAIN_BYTES,
    MAX_CHAIN_CERTIFICATES,
    CertificateError,
    VerifiedDevice,
    _aware,
    _extension,
    fingerprint,
    normalize_fingerprint,
    normalize_serial,
    serial_hex,
    verify_device_chain,
)
from attestation.keys import KeyKind, SigningKey, VerifyKey

__all__ = [
    "DEVICE_URI_PREFIX",
    "MAX_CHAIN_BYTES",
    "MAX_CHAIN_CERTIFICATES",
    "CertificateError",
    "VerifiedDevice",
    "cert_from_pem",
    "cert_to_pem",
    "create_ca",
    "create_intermediate",
    "device_uri",
    "fingerprint",
    "issue_certificate",
    "normalize_fingerprint",
    "normalize_serial",
    "serial_hex",
    "verify_device_certificate",
    "verify_device_chain",
]


def device_uri(device_id: str) -> str:
    return DEVICE_URI_PREFIX + device_id


def cert_to_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def cert_from_pem(data: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(data)
    except (ValueError, x509.InvalidVersion) as exc:
        raise CertificateError(f"not a PEM certificate: {exc}") from exc


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


def _ca_builder(
    subject: x509.Name, issuer: x509.Name, key: SigningKey, start: dt.datetime, days: int, path: int
) -> x509.CertificateBuilder:
    public = key.public_key.cryptography_key
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )


def create_ca(
    common_name: str, key: SigningKey, *, now: dt.datetime, days: int, path_length: int = 0
) -> x509.Certificate:
    """A self-signed root CA; `path_length` is how many intermediate CAs may sit below it.

    The default, 0, lets it sign end-entity certificates only; use 1 to sign intermediates.
    """
    start = _aware(now)
    if path_length < 0:
        raise ValueError("path_length must not be negative")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    return _sign(_ca_builder(name, name, key, start, days, path_length), key)


def create_intermediate(
    common_name: str,
    key: SigningKey,
    *,
    parent_key: SigningKey,
    parent_cert: x509.Certificate,
    now: dt.datetime,
    days: int,
    extended_key_usage: Sequence[x509.ObjectIdentifier] = (),
) -> x509.Certificate:
    """An intermediate CA for `key`, signed by the parent CA; it may sign end-entity
    certificates only (path length 0). The parent must be a CA whose path length allows an
    intermediate. `extended_key_usage` limits what the certificates it issues may be used for
    (the facility's client-issuing CA: clientAuth)."""
    start = _aware(now)
    _check_parent(parent_key, parent_cert, "parent_key", "parent_cert")
    constraints = _extension(parent_cert.extensions, x509.BasicConstraints)
    if constraints is None or not constraints.ca or constraints.path_length == 0:
        raise ValueError(
            "parent_cert may not sign intermediate CAs (not a CA, or path length 0); "
            "create the root with create_ca(..., path_length=1)"
        )
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = _ca_builder(name, parent_cert.subject, key, start, days, 0).add_extension(
        _authority_key_id(parent_cert, parent_key), critical=False
    )
    if extended_key_usage:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage(list(extended_key_usage)), critical=False
        )
    return _sign(builder, parent_key)


def _check_parent(key: SigningKey, cert: x509.Certificate, key_arg: str, cert_arg: str) -> None:
    if VerifyKey.from_cryptography(cert.public_key()) != key.public_key:
        raise ValueError(f"{key_arg} is not the key of {cert_arg}")


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
    """An end-entity certificate for `public_key`, signed by the (root or intermediate) CA."""
    start = _aware(now)
    _check_parent(ca_key, ca_cert, "ca_key", "ca_cert")
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
    ski = _extension(ca_cert.extensions, x509.SubjectKeyIdentifier)
    if ski is None:
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
    """The device id and attestation key vouched for by the CA, or `CertificateError` saying why.

    `cert_pem` may carry intermediates after the device certificate. Nothing is revoked here:
    callers that keep a revocation list use `verify_device_chain`.
    """
    verified = verify_device_chain(cert_pem, ca_pem, now=now, revoked_serials=frozenset())
    return verified.device_id, verified.key
