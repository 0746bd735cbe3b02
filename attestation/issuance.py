"""Client credentials from the facility's client-issuing CA: requests (CSRs), issuance, renewal.

The person (or service) makes their own key and a certificate signing request naming the
principal; the key never leaves them. The operator, holding the client-issuing CA's key
wherever the facility keeps it (not on the broker), issues a short-lived certificate from the
request: the public key comes from the CSR, whose own signature proves its holder has the
private key; the name comes from the operator. What the CSR asks for is only compared with
what the operator names, so a request for someone else's name is refused, never granted.
Renewal issues the same key and name again with a new serial and lifetime.

All times are passed in and must be timezone-aware (see `attestation.pki`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from attestation._chain import _aware, _extension
from attestation.keys import KeyKind, SigningKey, VerifyKey
from attestation.pki import issue_certificate

DEFAULT_CLIENT_DAYS = 30
MAX_CLIENT_DAYS = 365
# Certificates start this much before `now`, so a peer whose clock lags a little accepts them.
BACKDATE = dt.timedelta(minutes=5)
# A CSR is a few hundred bytes; the cap bounds what parsing a hostile file costs.
MAX_CSR_BYTES = 16 * 1024


class IssuanceError(ValueError):
    """A certificate cannot be issued as asked; the message says why and what to do."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ClientRequest:
    """What a CSR asks for, once its signature has been checked against its own key."""

    public_key: VerifyKey  # ECDSA P-256: the key gRPC's TLS stacks all accept
    common_name: str | None
    uris: tuple[str, ...]  # the URI subject alternative names it asks for


def create_csr(key: SigningKey, principal_uri: str, *, common_name: str | None = None) -> bytes:
    """A PEM certificate signing request for `key` naming `principal_uri` (and the CN)."""
    if key.kind is not KeyKind.ECDSA_P256:
        raise ValueError("client keys are ECDSA P-256 (SigningKey.generate(KeyKind.ECDSA_P256))")
    names = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else []
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name(names))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(principal_uri)]),
            critical=False,
        )
    )
    csr = builder.sign(key.cryptography_key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def read_csr(pem: bytes) -> ClientRequest:
    """The request a PEM CSR makes, or IssuanceError: unreadable, badly signed, wrong key."""
    if len(pem) > MAX_CSR_BYTES:
        raise IssuanceError(f"the CSR is over {MAX_CSR_BYTES} bytes; it is not a client CSR")
    try:
        csr = x509.load_pem_x509_csr(pem)
        signed = csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm, InvalidSignature) as exc:
        raise IssuanceError(f"not a PEM certificate signing request: {exc}") from exc
    if not signed:
        raise IssuanceError(
            "the CSR's signature does not verify with its own key: it was altered or made "
            "wrongly; ask for a new one (qtestbed credential request)"
        )
    key = _client_key(csr.public_key())
    cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    san = _extension(csr.extensions, x509.SubjectAlternativeName)
    return ClientRequest(
        public_key=key,
        common_name=str(cns[0].value) if cns else None,
        uris=tuple(san.get_values_for_type(x509.UniformResourceIdentifier)) if san else (),
    )


def _client_key(public: CertificatePublicKeyTypes) -> VerifyKey:
    try:
        key = VerifyKey.from_cryptography(public)
    except ValueError:
        key = None
    if key is None or key.kind is not KeyKind.ECDSA_P256:
        raise IssuanceError(
            "the key is not ECDSA P-256, the only client key this facility issues for "
            "(qtestbed credential request makes one)"
        )
    return key


def issue_client_certificate_from_csr(
    csr_pem: bytes,
    *,
    ca_key: SigningKey,
    ca_cert: x509.Certificate,
    principal_uri: str,
    common_name: str,
    now: dt.datetime,
    days: int = DEFAULT_CLIENT_DAYS,
) -> x509.Certificate:
    """A client certificate for the CSR's key naming the principal the operator names.

    Refused (IssuanceError) when the CSR does not verify, its key is not P-256, or it asks for
    a different principal URI or common name than the operator's: signing someone else's
    request by mistake must not happen quietly.
    """
    request = read_csr(csr_pem)
    _check_agrees(request, principal_uri, common_name)
    return issue_client_certificate(
        ca_key=ca_key,
        ca_cert=ca_cert,
        public_key=request.public_key,
        principal_uri=principal_uri,
        common_name=common_name,
        now=now,
        days=days,
    )


def _check_agrees(request: ClientRequest, principal_uri: str, common_name: str) -> None:
    """What the CSR asks for, if anything, must be what the operator names."""
    if request.uris and set(request.uris) != {principal_uri}:
        raise IssuanceError(
            f"the CSR asks for {', '.join(request.uris)}, not {principal_uri}: check that this "
            "is the right person's request and the right facility id"
        )
    if request.common_name is not None and request.common_name != common_name:
        raise IssuanceError(
            f"the CSR names {request.common_name!r}, not {common_name!r}: check that this is "
            "the right person's request"
        )


def issue_client_certificate(
    *,
    ca_key: SigningKey,
    ca_cert: x509.Certificate,
    public_key: VerifyKey,
    principal_uri: str,
    common_name: str,
    now: dt.datetime,
    days: int = DEFAULT_CLIENT_DAYS,
) -> x509.Certificate:
    """A certificate for `public_key` with clientAuth, not a CA, a random serial, valid from
    a few minutes before `now` for `days` (1 to MAX_CLIENT_DAYS, within the CA's own life)."""
    if not 1 <= days <= MAX_CLIENT_DAYS:
        raise IssuanceError(f"a client certificate lasts 1 to {MAX_CLIENT_DAYS} days, not {days}")
    check_client_ca(ca_cert)
    start = _aware(now) - BACKDATE
    if start + dt.timedelta(days=days) > ca_cert.not_valid_after_utc:
        raise IssuanceError(
            f"the client-issuing CA expires at {ca_cert.not_valid_after_utc.isoformat()}, "
            f"before {days} days from now; give fewer --days or renew the CA"
        )
    return issue_certificate(
        ca_key=ca_key,
        ca_cert=ca_cert,
        subject_cn=common_name,
        public_key=public_key,
        now=start,
        days=days,
        uris=[principal_uri],
        client=True,
    )


def renew_client_certificate(
    cert_pem: bytes,
    *,
    ca_key: SigningKey,
    ca_cert: x509.Certificate,
    now: dt.datetime,
    days: int = DEFAULT_CLIENT_DAYS,
) -> x509.Certificate:
    """The same key and principal as `cert_pem` (issued by this CA; expired is fine), with a
    new serial and lifetime. Whether its serial was revoked is the caller's to check."""
    old = _issued_here(cert_pem, ca_cert)
    san = _extension(old.extensions, x509.SubjectAlternativeName)
    uris = san.get_values_for_type(x509.UniformResourceIdentifier) if san else []
    if len(uris) != 1:
        raise IssuanceError("the certificate does not name exactly one principal URI")
    cns = old.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return issue_client_certificate(
        ca_key=ca_key,
        ca_cert=ca_cert,
        public_key=_client_key(old.public_key()),
        principal_uri=uris[0],
        common_name=str(cns[0].value) if cns else uris[0],
        now=now,
        days=days,
    )


def _issued_here(cert_pem: bytes, ca_cert: x509.Certificate) -> x509.Certificate:
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise IssuanceError(f"not a PEM certificate: {exc}") from exc
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise IssuanceError(
            "the certificate was not issued by this client-issuing CA; renew it with the CA "
            "that issued it, or issue a new one from a CSR"
        ) from exc
    return cert


def check_client_ca(ca_cert: x509.Certificate) -> None:
    """IssuanceError unless `ca_cert` is a CA limited to clientAuth: the client-issuing CA, not
    the root (no usage limit) and not the device-issuing CA."""
    constraints = _extension(ca_cert.extensions, x509.BasicConstraints)
    usage = _extension(ca_cert.extensions, x509.ExtendedKeyUsage)
    if constraints is None or not constraints.ca or usage is None:
        raise IssuanceError(
            "this is not the facility's client-issuing CA (a CA whose usage is clientAuth); "
            "use ca/clients-ca.pem and its key"
        )
    if ExtendedKeyUsageOID.CLIENT_AUTH not in usage:
        raise IssuanceError("this CA may not issue client certificates (no clientAuth usage)")
