"""The TLS side of the /metrics endpoint: the broker presents its own certificate, and a client
must present one that chains to the facility root (sending the client-issuing CA's certificate
with its own, as gRPC clients do). Which issuer, usage and principal it names is the identity
check's job (`broker.scrape.gate`), exactly as at the gRPC edge.

TLS 1.3 only, and no session tickets: every scrape is a full handshake, so a revoked or expired
certificate cannot ride on a resumed session.
"""

from __future__ import annotations

import ssl
from pathlib import Path

# OpenSSL's verification codes (X509_V_ERR_*) that have reasons of their own.
_CERT_NOT_YET_VALID = 9
_CERT_HAS_EXPIRED = 10


def server_context(*, cert: Path, key: Path, root: Path) -> ssl.SSLContext:
    """The endpoint's TLS settings; `key` has already been checked to be private (0600)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.num_tickets = 0
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cafile=str(root))
    context.load_cert_chain(certfile=str(cert), keyfile=str(key))
    return context


def handshake_reason(exc: BaseException) -> str:
    """The front-door refusal reason of a failed handshake, named as the gRPC edge names them:
    no_certificate, bad_chain, expired, not_yet_valid, or tls_other for anything else (plain
    HTTP, a protocol version below 1.3, a reset)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        if exc.verify_code == _CERT_HAS_EXPIRED:
            return "expired"
        if exc.verify_code == _CERT_NOT_YET_VALID:
            return "not_yet_valid"
        return "bad_chain"
    if isinstance(exc, ssl.SSLError) and exc.reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
        return "no_certificate"
    return "tls_other"
