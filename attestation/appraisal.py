"""The Verifier (RFC 9334): appraises Evidence against endorsements and reference values.

Every rule is checked and every failure reported with its own reason code, so an operator sees
the whole picture at once. Order follows Keylime: identity (the certificate chain and what the
operator registered), then the signature, then payload type and claims, nonce, freshness and
counter, then the reference values' validity window and the measurements.

The nonce is consumed only when the evidence is attributable to the device: its chain is valid,
unrevoked and registered for it, and the signature verifies with the certificate's key.
Consuming it on a forged envelope would let anyone who can reach the broker burn the real
device's challenge; otherwise the nonce's state is still reported, from a read-only check.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import math
from dataclasses import dataclass

from attestation.calibration import NO_WINDOWS, CalibrationWindows, calibration_reasons
from attestation.dsse import Envelope, EnvelopeError, verify_envelope
from attestation.evidence import (
    EVIDENCE_PAYLOAD_TYPE,
    EvidenceClaims,
    EvidenceError,
    Measurements,
    decode_claims,
)
from attestation.keys import VerifyKey
from attestation.nonces import NonceIssuer
from attestation.pki import CertificateError, normalize_fingerprint, verify_device_chain
from attestation.reasons import ReasonCode

__all__ = [
    "AppraisalPolicy",
    "AttestationResult",
    "AttestationStatus",
    "Reason",
    "ReasonCode",
    "ReferenceValues",
    "appraise",
]


class AttestationStatus(enum.Enum):
    """EAR (draft-ietf-rats-ear) trust tiers of a result."""

    AFFIRMING = "affirming"  # every check passed: the device may receive work until expiry
    WARNING = "warning"  # reserved for relying-party policy; appraise() never returns it
    CONTRAINDICATED = "contraindicated"  # at least one check failed: the device gets no work


@dataclass(frozen=True, kw_only=True, slots=True)
class Reason:
    """One failed check: its code and a human-readable detail (expected versus got)."""

    code: ReasonCode
    detail: str


@dataclass(frozen=True, kw_only=True, slots=True)
class ReferenceValues:
    """Known-good measurements for one device: each set lists every accepted value.

    An empty set is refused rather than read as "anything goes", so a missing entry in the
    facility file can never silently switch a check off. The values hold in the window
    [not_before, not_after) of verifier time (seconds since the epoch; None: unbounded on that
    side); `version` names them in results and logs. `calibration` bounds the calibration
    figures the device claims (see `attestation.calibration`); a figure without a window is
    only checked for being physical.
    """

    firmware: frozenset[str]
    control_software: frozenset[str]
    driver_build: frozenset[str]
    calibration_digest: frozenset[str]
    num_qubits: int
    not_before: float | None = None
    not_after: float | None = None
    version: int = 1
    calibration: CalibrationWindows = NO_WINDOWS

    def __post_init__(self) -> None:
        for name in ("firmware", "control_software", "driver_build", "calibration_digest"):
            if not getattr(self, name):
                raise ValueError(f"reference values: {name} must list at least one value")
        if self.num_qubits < 1:
            raise ValueError("reference values: num_qubits must be at least 1")
        for bound in (self.not_before, self.not_after):
            if bound is not None and not math.isfinite(bound):
                raise ValueError("reference values: not_before and not_after must be finite")
        if (
            self.not_before is not None
            and self.not_after is not None
            and self.not_before >= self.not_after
        ):
            raise ValueError("reference values: not_before must be earlier than not_after")
        if self.version < 1:
            raise ValueError("reference values: version must be at least 1")


@dataclass(frozen=True, kw_only=True, slots=True)
class AppraisalPolicy:
    """Time limits of appraisal, in seconds."""

    max_evidence_age_seconds: float = 30
    max_clock_skew_seconds: float = 5
    result_ttl_seconds: float = 300

    def __post_init__(self) -> None:
        if self.max_evidence_age_seconds <= 0 or self.result_ttl_seconds <= 0:
            raise ValueError("appraisal policy: evidence age and result TTL must be positive")
        if self.max_clock_skew_seconds < 0:
            raise ValueError("appraisal policy: clock skew must not be negative")


@dataclass(frozen=True, kw_only=True, slots=True)
class AttestationResult:
    """The verdict on one piece of evidence.

    `authenticated` says the evidence is provably the expected device's answer to this
    challenge: its certificate chain is valid, unrevoked and registered for that device, the
    signature verifies with the certificate's key, and the signed nonce is one issued to that
    device, unused and unexpired (it is now used up). Only then can a failure be held against
    the device: an impostor with the public certificate, or with an old envelope the device
    once signed (earlier evidence, a published receipt), never produces an authenticated one.
    It defaults to False, the safe reading for results made outside `appraise`. `claims` is
    set only when authenticated, so unauthenticated claims never leave `appraise`.
    `evidence_digest` is the envelope's `digest()`, or the SHA-256 of the raw bytes when they
    were not an envelope.
    """

    device_id: str
    status: AttestationStatus
    reasons: tuple[Reason, ...]
    claims: EvidenceClaims | None
    evidence_digest: str
    issued_at: float
    expires_at: float
    authenticated: bool = False

    @property
    def codes(self) -> frozenset[ReasonCode]:
        return frozenset(r.code for r in self.reasons)

    def affirming(self, now: float) -> bool:
        return self.status is AttestationStatus.AFFIRMING and now < self.expires_at


def appraise(
    envelope_json: bytes,
    *,
    expected_device_id: str,
    certificate_chain: bytes,
    trust_anchor: bytes,
    registered_fingerprints: frozenset[str],
    revoked_serials: frozenset[str],
    reference: ReferenceValues | None,
    nonces: NonceIssuer,
    last_counter: tuple[str, int] | None,
    policy: AppraisalPolicy,
    now: float,
) -> AttestationResult:
    """Appraise evidence from the device connected as `expected_device_id`; never raises on
    hostile input, every failure is a reason in the result.

    `certificate_chain` is the device certificate and any intermediates (PEM), `trust_anchor`
    the facility's root CA (PEM). `registered_fingerprints` are the SHA-256 fingerprints of the
    certificates the operator registered for this device (empty: none), `revoked_serials` the
    serials of revoked certificates, `reference` its reference values (None: none registered),
    `last_counter` (boot_epoch, counter) of its last affirmed evidence; `now` is epoch seconds.
    """
    reasons: list[Reason] = []
    key, registered = _identity_reasons(
        expected_device_id,
        certificate_chain,
        trust_anchor,
        registered_fingerprints,
        revoked_serials,
        now,
        reasons,
    )
    if reference is None:
        detail = f"no reference values registered for device {expected_device_id!r}"
        reasons.append(Reason(code=ReasonCode.UNKNOWN_DEVICE, detail=detail))
    envelope = _parse(envelope_json, reasons)
    claims, authenticated = None, False
    if envelope is not None:
        signed = _signature_reasons(envelope, key, expected_device_id, reasons)
        claims = _decode(envelope, reasons)
        if claims is not None:
            attributable = signed and registered
            fresh = _nonce_reasons(claims, expected_device_id, nonces, attributable, now, reasons)
            authenticated = attributable and fresh
            reasons.extend(_claim_reasons(claims, expected_device_id, policy, now))
            reasons.extend(_counter_reasons(claims, last_counter))
    if reference is not None:
        reasons.extend(_window_reasons(reference, now))
        if claims is not None:
            reasons.extend(_measurement_reasons(claims.measurements, reference))
    digest = (
        envelope.digest() if envelope is not None else hashlib.sha256(envelope_json).hexdigest()
    )
    trusted = claims if authenticated else None
    return _result(expected_device_id, reasons, trusted, authenticated, digest, policy, now)


def _identity_reasons(
    device_id: str,
    chain: bytes,
    anchor: bytes,
    registered_fingerprints: frozenset[str],
    revoked_serials: frozenset[str],
    now: float,
    reasons: list[Reason],
) -> tuple[VerifyKey | None, bool]:
    """The certificate's key (None if the chain is refused), and whether the certificate is
    the one registered for `device_id`."""
    try:
        when = dt.datetime.fromtimestamp(now, dt.UTC)
        verified = verify_device_chain(chain, anchor, now=when, revoked_serials=revoked_serials)
    except CertificateError as exc:
        reasons.append(Reason(code=exc.code, detail=f"device certificate chain refused: {exc}"))
        verified = None
    matches = known = False
    if verified is not None:
        matches = verified.device_id == device_id
        if not matches:
            detail = f"certificate is for device {verified.device_id!r}, connected as {device_id!r}"
            reasons.append(Reason(code=ReasonCode.DEVICE_MISMATCH, detail=detail))
        known = verified.fingerprint in {normalize_fingerprint(f) for f in registered_fingerprints}
        if registered_fingerprints and not known:
            detail = (
                f"certificate {verified.fingerprint[:16]}... (serial {verified.serial}) is not "
                f"one registered for device {device_id!r}"
            )
            reasons.append(Reason(code=ReasonCode.CERT_NOT_REGISTERED, detail=detail))
    if not registered_fingerprints:
        detail = f"no attestation key (certificate) registered for device {device_id!r}"
        reasons.append(Reason(code=ReasonCode.UNKNOWN_DEVICE, detail=detail))
    return (verified.key if verified is not None else None), matches and known


def _parse(envelope_json: bytes, reasons: list[Reason]) -> Envelope | None:
    try:
        return Envelope.from_json(envelope_json)
    except EnvelopeError as exc:
        reasons.append(Reason(code=ReasonCode.MALFORMED_EVIDENCE, detail=str(exc)))
        return None


def _signature_reasons(
    envelope: Envelope, key: VerifyKey | None, device_id: str, reasons: list[Reason]
) -> bool:
    if key is None:
        detail = "no certificate key to check the signature with: the chain was refused"
        reasons.append(Reason(code=ReasonCode.SIGNATURE_INVALID, detail=detail))
        return False
    if verify_envelope(envelope, key):
        return True
    detail = f"no signature by the certificate key of {device_id!r} ({key.key_id}) verifies"
    reasons.append(Reason(code=ReasonCode.SIGNATURE_INVALID, detail=detail))
    return False


def _decode(envelope: Envelope, reasons: list[Reason]) -> EvidenceClaims | None:
    if envelope.payload_type != EVIDENCE_PAYLOAD_TYPE:
        detail = f"payload type {envelope.payload_type[:100]!r}, expected {EVIDENCE_PAYLOAD_TYPE!r}"
        reasons.append(Reason(code=ReasonCode.PAYLOAD_TYPE_WRONG, detail=detail))
        return None
    try:
        return decode_claims(envelope.payload)
    except EvidenceError as exc:
        reasons.append(Reason(code=ReasonCode.MALFORMED_EVIDENCE, detail=str(exc)))
        return None


def _nonce_reasons(
    claims: EvidenceClaims,
    device_id: str,
    nonces: NonceIssuer,
    attributable: bool,
    now: float,
    reasons: list[Reason],
) -> bool:
    """True iff the nonce is good for this device; it is used up only if `attributable`."""
    if attributable:
        code = nonces.consume(device_id, claims.nonce, now)
    else:
        code = nonces.check(device_id, claims.nonce, now)
    if code is not None:
        detail = f"nonce {claims.nonce.hex()[:16]}... for {device_id!r}"
        reasons.append(Reason(code=code, detail=detail))
    return code is None


def _claim_reasons(
    claims: EvidenceClaims, device_id: str, policy: AppraisalPolicy, now: float
) -> list[Reason]:
    reasons = []
    if claims.device_id != device_id:
        detail = f"evidence is for device {claims.device_id!r}, connected as {device_id!r}"
        reasons.append(Reason(code=ReasonCode.DEVICE_MISMATCH, detail=detail))
    age = now - claims.issued_at
    if age > policy.max_evidence_age_seconds:
        detail = f"issued {age:.1f}s ago, limit {policy.max_evidence_age_seconds}s"
        reasons.append(Reason(code=ReasonCode.EVIDENCE_STALE, detail=detail))
    if -age > policy.max_clock_skew_seconds:
        detail = f"issued {-age:.1f}s in the future, allowed skew {policy.max_clock_skew_seconds}s"
        reasons.append(Reason(code=ReasonCode.CLOCK_SKEW, detail=detail))
    return reasons


def _counter_reasons(claims: EvidenceClaims, last_counter: tuple[str, int] | None) -> list[Reason]:
    # A new boot epoch restarts the counter; within one epoch it must strictly grow.
    if last_counter is None or claims.boot_epoch != last_counter[0]:
        return []
    if claims.counter > last_counter[1]:
        return []
    detail = (
        f"counter {claims.counter} in boot epoch {claims.boot_epoch!r} "
        f"is not above the last affirmed {last_counter[1]}"
    )
    return [Reason(code=ReasonCode.COUNTER_REGRESSED, detail=detail)]


def _window_reasons(reference: ReferenceValues, now: float) -> list[Reason]:
    name = f"reference values version {reference.version}"
    if reference.not_before is not None and now < reference.not_before:
        detail = f"{name} are valid from {reference.not_before}, now is {now}"
        return [Reason(code=ReasonCode.REFERENCE_NOT_YET_VALID, detail=detail)]
    if reference.not_after is not None and now >= reference.not_after:
        detail = f"{name} expired at {reference.not_after}, now is {now}"
        return [Reason(code=ReasonCode.REFERENCE_EXPIRED, detail=detail)]
    return []


def _measurement_reasons(got: Measurements, reference: ReferenceValues) -> list[Reason]:
    checks = (
        (ReasonCode.MEASUREMENT_FIRMWARE, "firmware", got.firmware, reference.firmware),
        (
            ReasonCode.MEASUREMENT_CONTROL_SOFTWARE,
            "control_software",
            got.control_software,
            reference.control_software,
        ),
        (
            ReasonCode.MEASUREMENT_DRIVER_BUILD,
            "driver_build",
            got.driver_build,
            reference.driver_build,
        ),
        (
            ReasonCode.MEASUREMENT_CALIBRATION,
            "calibration_digest",
            got.calibration_digest,
            reference.calibration_digest,
        ),
    )
    reasons = [
        Reason(code=code, detail=f"{name}: expected one of {sorted(allowed)}, got {value!r}")
        for code, name, value, allowed in checks
        if value not in allowed
    ]
    if got.num_qubits != reference.num_qubits:
        detail = f"num_qubits: expected {reference.num_qubits}, got {got.num_qubits}"
        reasons.append(Reason(code=ReasonCode.MEASUREMENT_QUBITS, detail=detail))
    reasons.extend(
        Reason(code=ReasonCode.CALIBRATION_OUT_OF_RANGE, detail=detail)
        for detail in calibration_reasons(got, reference.calibration)
    )
    return reasons


def _result(
    device_id: str,
    reasons: list[Reason],
    claims: EvidenceClaims | None,
    authenticated: bool,
    digest: str,
    policy: AppraisalPolicy,
    now: float,
) -> AttestationResult:
    # Requiring authenticated claims too means no path through appraise() can affirm evidence
    # that was not signed by the registered device in answer to this challenge.
    affirmed = not reasons and authenticated and claims is not None
    return AttestationResult(
        device_id=device_id,
        status=AttestationStatus.AFFIRMING if affirmed else AttestationStatus.CONTRAINDICATED,
        reasons=tuple(reasons),
        authenticated=authenticated,
        claims=claims,
        evidence_digest=digest,
        issued_at=now,
        expires_at=now + policy.result_ttl_seconds if affirmed else now,
    )
