"""Device certificate chains: path validation, by hand, for the facility's small PKI.

`cryptography.x509.verification` implements the Web PKI profile, which refuses Ed25519 CA keys
(checked with cryptography 50: "Forbidden public key algorithm"), and our CAs may be Ed25519; so
the rules of RFC 5280 that this PKI needs are applied here, each failure a `CertificateError`
with a reason code. `attestation.pki` is the public face of this module.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtensionOID, SignatureAlgorithmOID

from attestation.keys import VerifyKey
from attestation.reasons import ReasonCode

DEVICE_URI_PREFIX = "urn:qtestbed:device:"

# A chain is a device certificate and a few intermediates; the caps bound the work a hostile
# peer can cause before any signature has been checked.
MAX_CHAIN_BYTES = 64 * 1024
MAX_CHAIN_CERTIFICATES = 8

# What this PKI signs with (see `pki._sign`); anything else is refused rather than trusted.
_SIGNATURE_ALGORITHMS = frozenset(
    {SignatureAlgorithmOID.ED25519, SignatureAlgorithmOID.ECDSA_WITH_SHA256}
)
# RFC 5280 4.2: a certificate with a critical extension the verifier does not process is refused.
_PROCESSED_EXTENSIONS = frozenset(
    {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
    }
)
_ANCHOR = "trust anchor CA certificate"

_E = TypeVar("_E", bound=x509.ExtensionType)


class CertificateError(ValueError):
    """A certificate is unusable: the message says why, `code` classifies it for appraisal."""

    def __init__(self, message: str, code: ReasonCode = ReasonCode.CERT_UNTRUSTED) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, kw_only=True, slots=True)
class VerifiedDevice:
    """A device certificate that chains to the trust anchor, and what it vouches for."""

    device_id: str  # from the certificate's urn:qtestbed:device:<id> URI SAN
    key: VerifyKey  # the device's attestation key
    serial: str  # the certificate's serial number in lower-case hex, without 0x
    fingerprint: str  # hex SHA-256 of the certificate's DER encoding


def serial_hex(cert: x509.Certificate) -> str:
    """The serial number as `VerifiedDevice.serial` spells it: lower-case hex, no 0x."""
    return format(cert.serial_number, "x")


def fingerprint(cert: x509.Certificate) -> str:
    """Hex SHA-256 of the certificate's DER, as `VerifiedDevice.fingerprint` spells it."""
    return cert.fingerprint(hashes.SHA256()).hex()


def normalize_serial(text: str) -> str:
    """A serial as `serial_hex` spells it, from `0x..`, upper case, colons or leading zeros.

    Operators paste serials from `openssl x509 -serial` (upper case, maybe a leading 00); a
    revoked serial spelled differently must still match.
    """
    digits = text.strip().lower().removeprefix("0x").replace(":", "")
    return digits.lstrip("0") or "0"


def normalize_fingerprint(text: str) -> str:
    """A fingerprint as `fingerprint` spells it, from upper case or `AB:CD:..` (openssl)."""
    return text.strip().lower().replace(":", "")


def _aware(now: dt.datetime) -> dt.datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime (for example in dt.UTC)")
    return now


def verify_device_chain(
    chain_pem: bytes, anchor_pem: bytes, *, now: dt.datetime, revoked_serials: frozenset[str]
) -> VerifiedDevice:
    """Validate a device certificate chain against the trust anchor, or raise `CertificateError`.

    `chain_pem` is the device certificate followed by zero or more intermediates, each issued
    by the next, the last by the anchor (which is not part of the chain). Checked, in order:
    the anchor is one CA certificate; the first certificate is not a CA; every issuer is a CA
    with keyCertSign whose path length allows the intermediates below it; every signature
    (Ed25519 or ECDSA-SHA256, P-256 or Ed25519 keys) verifies; no certificate has a critical
    extension this code does not process; the device certificate names exactly one device and
    may sign; then revocation of any chain certificate (`CERT_REVOKED`, serials compared after
    `normalize_serial`), then validity of every certificate and the anchor at `now`, both ends
    inclusive (`CERT_NOT_YET_VALID`, `CERT_EXPIRED`). Anything else is `CERT_UNTRUSTED`.
    """
    when = _aware(now)
    chain = _load_chain(chain_pem)
    anchor = _load_anchor(anchor_pem)
    labels = [_label(i, cert) for i, cert in enumerate(chain)]
    anchor_limit = _ca_path_length(anchor, _ANCHOR)
    if anchor in chain:
        raise CertificateError("the chain must not include the trust anchor itself")
    _check_path_length(anchor_limit, _ANCHOR, below=len(chain) - 1)
    _check_not_ca(chain[0])
    for i, cert in enumerate(chain):
        last = i == len(chain) - 1
        if not last:
            _check_issuer(chain[i + 1], labels[i + 1], below=i)
        issuer = anchor if last else chain[i + 1]
        _check_signed(
            cert, labels[i], issuer, "this CA (the trust anchor)" if last else labels[i + 1]
        )
    device_id, key = _device_identity(chain[0])
    _check_revocation(chain, labels, revoked_serials)
    for cert, label in [*zip(chain, labels, strict=True), (anchor, _ANCHOR)]:
        _check_validity(cert, when, label)
    return VerifiedDevice(
        device_id=device_id,
        key=key,
        serial=serial_hex(chain[0]),
        fingerprint=fingerprint(chain[0]),
    )


def _load_chain(data: bytes) -> list[x509.Certificate]:
    if len(data) > MAX_CHAIN_BYTES:
        raise CertificateError(f"certificate chain is {len(data)} bytes, over {MAX_CHAIN_BYTES}")
    try:
        chain = x509.load_pem_x509_certificates(data)
    except (ValueError, TypeError, x509.InvalidVersion) as exc:
        raise CertificateError(f"certificate chain is not PEM certificates: {exc}") from exc
    if len(chain) > MAX_CHAIN_CERTIFICATES:
        raise CertificateError(
            f"certificate chain has {len(chain)} certificates, over {MAX_CHAIN_CERTIFICATES}"
        )
    if any(cert.serial_number <= 0 for cert in chain):
        raise CertificateError("certificate chain has a serial number that is not positive")
    return chain


def _load_anchor(data: bytes) -> x509.Certificate:
    try:
        anchors = x509.load_pem_x509_certificates(data)
    except (ValueError, TypeError, x509.InvalidVersion) as exc:
        raise CertificateError(f"trust anchor is not a PEM certificate: {exc}") from exc
    if len(anchors) != 1:
        raise CertificateError(f"trust anchor must be one certificate, got {len(anchors)}")
    return anchors[0]


def _label(index: int, cert: x509.Certificate) -> str:
    if index == 0:
        return "device certificate"
    try:
        name = cert.subject.rfc4514_string()
    except ValueError:
        name = "?"
    return f"intermediate CA certificate {index} ({name[:120]})"


def _extensions(cert: x509.Certificate, label: str) -> x509.Extensions:
    """The parsed extensions, refusing malformed ones and critical ones we do not process."""
    try:
        extensions = cert.extensions
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        raise CertificateError(f"{label} has malformed extensions: {exc}") from exc
    for ext in extensions:
        if ext.critical and ext.oid not in _PROCESSED_EXTENSIONS:
            raise CertificateError(
                f"{label} has a critical extension this verifier does not process "
                f"({ext.oid.dotted_string})"
            )
    return extensions


def _extension(extensions: x509.Extensions, kind: type[_E]) -> _E | None:
    try:
        return extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _check_issuer(cert: x509.Certificate, label: str, *, below: int) -> None:
    """`cert` may issue certificates with `below` intermediate CAs between it and the device."""
    _check_path_length(_ca_path_length(cert, label), label, below=below)


def _ca_path_length(cert: x509.Certificate, label: str) -> int | None:
    """The path length limit of a CA certificate that may sign certificates."""
    extensions = _extensions(cert, label)
    constraints = _extension(extensions, x509.BasicConstraints)
    if constraints is None or not constraints.ca:
        raise CertificateError(f"{label} is not a CA certificate, yet it issued the next one")
    usage = _extension(extensions, x509.KeyUsage)
    if usage is None or not usage.key_cert_sign:
        raise CertificateError(f"{label} may not sign certificates (no keyCertSign key usage)")
    return constraints.path_length


def _check_path_length(limit: int | None, label: str, *, below: int) -> None:
    if limit is not None and below > limit:
        raise CertificateError(
            f"{label} allows {limit} intermediate CA(s) below it, the chain has {below}"
        )


def _check_not_ca(cert: x509.Certificate) -> None:
    extensions = _extensions(cert, "device certificate")
    constraints = _extension(extensions, x509.BasicConstraints)
    usage = _extension(extensions, x509.KeyUsage)
    if (constraints is not None and constraints.ca) or (usage is not None and usage.key_cert_sign):
        raise CertificateError(
            "the first certificate must be the device certificate, but it is a CA "
            "certificate (is the chain out of order?)"
        )
    if usage is not None and not usage.digital_signature:
        raise CertificateError("device certificate's key usage does not allow signatures")


def _public_key(cert: x509.Certificate, label: str) -> VerifyKey:
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CertificateError(f"{label} key cannot be read: {exc}") from exc
    try:
        return VerifyKey.from_cryptography(key)
    except ValueError as exc:
        curve = getattr(getattr(key, "curve", None), "name", "")
        kind = f"{type(key).__name__} {curve}".strip()
        raise CertificateError(f"{label} key is {kind}, not Ed25519 or ECDSA P-256") from exc


def _check_signed(
    cert: x509.Certificate, label: str, issuer: x509.Certificate, issuer_label: str
) -> None:
    _public_key(issuer, issuer_label)  # refuses CA keys other than Ed25519 and P-256
    if cert.signature_algorithm_oid not in _SIGNATURE_ALGORITHMS:
        name = cert.signature_algorithm_oid.dotted_string
        raise CertificateError(f"{label} is signed with an algorithm not accepted here ({name})")
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise CertificateError(f"{label} is not signed by {issuer_label}") from exc


def _device_identity(cert: x509.Certificate) -> tuple[str, VerifyKey]:
    san = _extension(_extensions(cert, "device certificate"), x509.SubjectAlternativeName)
    uris = san.get_values_for_type(x509.UniformResourceIdentifier) if san is not None else []
    ids = [u.removeprefix(DEVICE_URI_PREFIX) for u in uris if u.startswith(DEVICE_URI_PREFIX)]
    if not ids or not ids[0]:
        raise CertificateError(f"certificate has no {DEVICE_URI_PREFIX}<id> URI")
    # Two device URIs would make the certificate vouch for two devices; refuse to choose one.
    if len(ids) > 1:
        raise CertificateError("certificate names more than one device")
    return ids[0], _public_key(cert, "device certificate")


def _check_revocation(
    chain: Sequence[x509.Certificate], labels: Sequence[str], revoked_serials: frozenset[str]
) -> None:
    if not revoked_serials:
        return
    revoked = {normalize_serial(s) for s in revoked_serials}
    for cert, label in zip(chain, labels, strict=True):
        serial = serial_hex(cert)
        if serial in revoked:
            raise CertificateError(f"{label} (serial {serial}) is revoked", ReasonCode.CERT_REVOKED)


def _check_validity(cert: x509.Certificate, when: dt.datetime, label: str) -> None:
    if when < cert.not_valid_before_utc:
        raise CertificateError(
            f"{label} is not yet valid (from {cert.not_valid_before_utc})",
            ReasonCode.CERT_NOT_YET_VALID,
        )
    if when > cert.not_valid_after_utc:
        raise CertificateError(
            f"{label} expired at {cert.not_valid_after_utc}", ReasonCode.CERT_EXPIRED
        )
