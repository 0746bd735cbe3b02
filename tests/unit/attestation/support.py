"""Helpers for the attestation tests: a root CA with one intermediate, a raw certificate builder
for the malformed certificates the library's own issuers refuse to make, and evidence and
appraisal shorthands with the reference values the appraisal tests share."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from attestation.appraisal import (
    AppraisalPolicy,
    AttestationResult,
    ReferenceValues,
    appraise,
)
from attestation.evidence import EvidenceClaims, Measurements, make_evidence
from attestation.keys import KeyKind, SigningKey, VerifyKey
from attestation.nonces import NonceIssuer
from attestation.pki import (
    cert_to_pem,
    create_ca,
    create_intermediate,
    device_uri,
    issue_certificate,
)

DEVICE = "qpu-1"
NOW = 1_700_000_000.0
NOW_DT = dt.datetime.fromtimestamp(NOW, dt.UTC)
POLICY = AppraisalPolicy(
    max_evidence_age_seconds=30, max_clock_skew_seconds=5, result_ttl_seconds=300
)
REFERENCE = ReferenceValues(
    firmware=frozenset({"fw-1.2", "fw-1.3"}),
    control_software=frozenset({"ctl-4"}),
    driver_build=frozenset({"drv-abc"}),
    calibration_digest=frozenset({"c" * 64}),
    num_qubits=5,
)
GOOD_MEASUREMENTS = Measurements(
    firmware="fw-1.3",
    control_software="ctl-4",
    driver_build="drv-abc",
    calibration_digest="c" * 64,
    num_qubits=5,
    two_qubit_error=0.01,
)


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(cert_to_pem(c) for c in certs)


@dataclass(frozen=True, kw_only=True)
class Pki:
    """A root CA (path length 1) and an intermediate it signed, valid from `start` for `days`."""

    root_key: SigningKey
    root: x509.Certificate
    intermediate_key: SigningKey
    intermediate: x509.Certificate

    @property
    def anchor(self) -> bytes:
        return pem(self.root)

    def device_cert(
        self,
        key: SigningKey | VerifyKey,
        *,
        start: dt.datetime,
        days: int = 30,
        device_id: str = DEVICE,
        direct: bool = False,
    ) -> x509.Certificate:
        """A device certificate from the intermediate (or, `direct`, from the root)."""
        public = key.public_key if isinstance(key, SigningKey) else key
        return issue_certificate(
            ca_key=self.root_key if direct else self.intermediate_key,
            ca_cert=self.root if direct else self.intermediate,
            subject_cn=device_id,
            public_key=public,
            now=start,
            days=days,
            uris=[device_uri(device_id)],
            client=True,
        )

    def chain(self, device: x509.Certificate, *, direct: bool = False) -> bytes:
        return pem(device) if direct else pem(device, self.intermediate)


def make_pki(
    *,
    start: dt.datetime,
    days: int = 365,
    ca_kind: KeyKind = KeyKind.ECDSA_P256,
    intermediate_days: int | None = None,
    root_name: str = "qtestbed test root",
) -> Pki:
    root_key = SigningKey.generate(ca_kind)
    root = create_ca(root_name, root_key, now=start, days=days, path_length=1)
    intermediate_key = SigningKey.generate(ca_kind)
    intermediate = create_intermediate(
        "qtestbed test intermediate",
        intermediate_key,
        parent_key=root_key,
        parent_cert=root,
        now=start,
        days=intermediate_days or days,
    )
    return Pki(
        root_key=root_key, root=root, intermediate_key=intermediate_key, intermediate=intermediate
    )


def raw_cert(
    *,
    subject: str,
    issuer: x509.Certificate | None,
    signer: SigningKey,
    public_key: VerifyKey,
    start: dt.datetime,
    days: int = 30,
    ca: bool | None = False,
    path_length: int | None = None,
    key_cert_sign: bool | None = None,
    uris: Sequence[str] = (),
    critical_unknown: bool = False,
) -> x509.Certificate:
    """Any certificate, including ones a careful issuer would refuse to make.

    `issuer` None makes it self-issued; `ca` None leaves out basicConstraints; `key_cert_sign`
    None leaves out keyUsage (else it sets keyCertSign to that and digitalSignature to not it).
    """
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer is not None else name)
        .public_key(public_key.cryptography_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
    )
    if ca is not None:
        constraints = x509.BasicConstraints(ca=ca, path_length=path_length if ca else None)
        builder = builder.add_extension(constraints, critical=True)
    if key_cert_sign is not None:
        usage = x509.KeyUsage(
            digital_signature=not key_cert_sign,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=key_cert_sign,
            crl_sign=key_cert_sign,
            encipher_only=False,
            decipher_only=False,
        )
        builder = builder.add_extension(usage, critical=True)
    if uris:
        names = [x509.UniformResourceIdentifier(u) for u in uris]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if critical_unknown:
        unknown = x509.UnrecognizedExtension(
            x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00"
        )
        builder = builder.add_extension(unknown, critical=True)
    algorithm = None if signer.kind is KeyKind.ED25519 else hashes.SHA256()
    return builder.sign(signer.cryptography_key, algorithm)


@dataclass(frozen=True, kw_only=True)
class Identity:
    """What the broker hands `appraise` about the connected device's certificate."""

    chain: bytes
    anchor: bytes
    registered: frozenset[str]
    revoked: frozenset[str] = frozenset()


def make_claims(nonce: bytes, **changes: Any) -> EvidenceClaims:
    measured = dataclasses.replace(GOOD_MEASUREMENTS, **changes.pop("measurements", {}))
    fields: dict[str, Any] = {
        "device_id": DEVICE,
        "nonce": nonce,
        "issued_at": NOW - 1,
        "boot_epoch": "boot-1",
        "counter": 5,
        "measurements": measured,
    }
    return EvidenceClaims(**{**fields, **changes})


def sign_evidence(key: SigningKey, nonces: NonceIssuer, **changes: Any) -> bytes:
    """Evidence answering a fresh nonce (or `nonce=`), signed by `key`, as envelope JSON."""
    nonce = changes.pop("nonce", None) or nonces.issue(DEVICE, NOW - 2)
    return make_evidence(make_claims(nonce, **changes), key).to_json()


def run_appraisal(
    evidence: bytes,
    nonces: NonceIssuer,
    identity: Identity,
    *,
    reference: ReferenceValues | None = REFERENCE,
    last_counter: tuple[str, int] | None = ("boot-1", 4),
    now: float = NOW,
) -> AttestationResult:
    return appraise(
        evidence,
        expected_device_id=DEVICE,
        certificate_chain=identity.chain,
        trust_anchor=identity.anchor,
        registered_fingerprints=identity.registered,
        revoked_serials=identity.revoked,
        reference=reference,
        nonces=nonces,
        last_counter=last_counter,
        policy=POLICY,
        now=now,
    )
