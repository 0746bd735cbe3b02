"""Client certificates: who a TLS client is, decided from what its certificate's issuer vouches.

A principal's certificate must be issued directly by the facility's client-issuing CA (not by
the root, not by the device-issuing CA, not by any other intermediate, even one the root
signed), carry the clientAuth extended key usage, not be a CA, and be within its validity; its
URI subject alternative names say who it names. The TLS layer has already checked the chain to
the facility root; this check is what pins the issuer, so a vendor holding a delegated device
CA cannot mint a principal.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.x509.oid import ExtendedKeyUsageOID

from attestation._chain import _aware, fingerprint, serial_hex


class ClientRefusal(enum.Enum):
    """Why a client certificate does not identify anyone here; one metric label each."""

    MALFORMED = "malformed"  # not a certificate this code can read
    WRONG_ISSUER = "wrong_issuer"  # not issued by the client-issuing CA (a device cert, say)
    WRONG_USAGE = "wrong_usage"  # a CA certificate, or no clientAuth extended key usage
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"


class ClientCertificateError(ValueError):
    def __init__(self, reason: ClientRefusal, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, kw_only=True, slots=True)
class VerifiedClient:
    """A client certificate the client-issuing CA vouches for, and what it says."""

    uris: tuple[str, ...]  # its URI subject alternative names
    serial: str  # lower-case hex, no 0x (what a revocation names)
    fingerprint: str  # hex SHA-256 of its DER
    not_before: float  # epoch seconds
    not_after: float


def verify_client_certificate(
    leaf_pem: bytes, issuer: x509.Certificate, *, now: dt.datetime
) -> VerifiedClient:
    """The verified client certificate, or ClientCertificateError with the reason."""
    try:
        cert = x509.load_pem_x509_certificate(leaf_pem)
    except ValueError as exc:
        raise ClientCertificateError(ClientRefusal.MALFORMED, f"not a certificate: {exc}") from exc
    _check_issued_by(cert, issuer)
    _check_usage(cert)
    _check_validity(cert, _aware(now))
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = tuple(san.get_values_for_type(x509.UniformResourceIdentifier))
    except x509.ExtensionNotFound:
        uris = ()
    return VerifiedClient(
        uris=uris,
        serial=serial_hex(cert),
        fingerprint=fingerprint(cert),
        not_before=cert.not_valid_before_utc.timestamp(),
        not_after=cert.not_valid_after_utc.timestamp(),
    )


def _check_issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> None:
    refused = ClientCertificateError(
        ClientRefusal.WRONG_ISSUER,
        "the certificate was not issued by this facility's client-issuing CA; "
        "researchers' and services' certificates come from it, devices' do not",
    )
    if cert.issuer != issuer.subject:
        raise refused
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise refused from exc


def _check_usage(cert: x509.Certificate) -> None:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        is_ca = constraints.ca
    except x509.ExtensionNotFound:
        is_ca = False
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        client_auth = ExtendedKeyUsageOID.CLIENT_AUTH in usages
    except x509.ExtensionNotFound:
        client_auth = False
    if is_ca or not client_auth:
        raise ClientCertificateError(
            ClientRefusal.WRONG_USAGE,
            "the certificate is not a client certificate (it must carry the clientAuth usage "
            "and not be a CA)",
        )


def _check_validity(cert: x509.Certificate, when: dt.datetime) -> None:
    if when < cert.not_valid_before_utc:
        raise ClientCertificateError(
            ClientRefusal.NOT_YET_VALID,
            f"the certificate is valid only from {cert.not_valid_before_utc.isoformat()}",
        )
    if when > cert.not_valid_after_utc:
        raise ClientCertificateError(
            ClientRefusal.EXPIRED,
            f"the certificate expired at {cert.not_valid_after_utc.isoformat()}; "
            "ask for a new one (qtestbed credential request)",
        )
