"""The Verifier (RFC 9334): appraises Evidence against reference values and produces a Result.

Every rule is checked and every failure reported with its own reason code, so an operator sees
the whole picture at once. Order follows Keylime: signature, then nonce, then freshness and
counter, then measurements.

The nonce is consumed only when the signature verified. Consuming it on a forged envelope would
let anyone who can reach the broker burn the real device's challenge; for unsigned evidence the
nonce's state is still reported, from a read-only check.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass

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
    facility file can never silently switch a check off.
    """

    firmware: frozenset[str]
    control_software: frozenset[str]
    driver_build: frozenset[str]
    calibration_digest: frozenset[str]
    num_qubits: int

    def __post_init__(self) -> None:
        for name in ("firmware", "control_software", "driver_build", "calibration_digest"):
            if not getattr(self, name):
                raise ValueError(f"reference values: {name} must list at least one value")
        if self.num_qubits < 1:
            raise ValueError("reference values: num_qubits must be at least 1")


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

    `claims` is set only when the signature verified: unauthenticated claims never leave
    `appraise`, so nothing downstream can mistake them for facts. `evidence_digest` is the
    envelope's `digest()`, or the SHA-256 of the raw bytes when they were not an envelope.
    """

    device_id: str
    status: AttestationStatus
    reasons: tuple[Reason, ...]
    claims: EvidenceClaims | None
    evidence_digest: str
    issued_at: float
    expires_at: float

    @property
    def codes(self) -> frozenset[ReasonCode]:
        return frozenset(r.code for r in self.reasons)

    def affirming(self, now: float) -> bool:
        return self.status is AttestationStatus.AFFIRMING and now < self.expires_at


def appraise(
    envelope_json: bytes,
    *,
    expected_device_id: str,
    key: VerifyKey | None,
    reference: ReferenceValues | None,
    nonces: NonceIssuer,
    last_counter: tuple[str, int] | None,
    policy: AppraisalPolicy,
    now: float,
) -> AttestationResult:
    """Appraise evidence from the device connected as `expected_device_id`.

    `key` and `reference` are what the facility registered for that device (None: nothing
    registered). `last_counter` is (boot_epoch, counter) of its last affirmed evidence.
    """
    reasons = _registration_reasons(expected_device_id, key, reference)
    try:
        envelope = Envelope.from_json(envelope_json)
    except EnvelopeError as exc:
        reasons.append(Reason(code=ReasonCode.MALFORMED_EVIDENCE, detail=str(exc)))
        raw_digest = hashlib.sha256(envelope_json).hexdigest()
        return _result(expected_device_id, reasons, None, raw_digest, policy, now)
    signed = key is not None and verify_envelope(envelope, key)
    if key is not None and not signed:
        detail = f"no signature by the key of {expected_device_id!r} ({key.key_id}) verifies"
        reasons.append(Reason(code=ReasonCode.SIGNATURE_INVALID, detail=detail))
    claims = _decode(envelope, reasons)
    if claims is not None:
        reasons.extend(_nonce_reasons(claims, expected_device_id, nonces, signed, now))
        reasons.extend(_claim_reasons(claims, expected_device_id, policy, now))
        reasons.extend(_counter_reasons(claims, last_counter))
        if reference is not None:
            reasons.extend(_measurement_reasons(claims.measurements, reference))
    trusted = claims if signed else None
    return _result(expected_device_id, reasons, trusted, envelope.digest(), policy, now)


def _registration_reasons(
    device_id: str, key: VerifyKey | None, reference: ReferenceValues | None
) -> list[Reason]:
    reasons = []
    if key is None:
        detail = f"no attestation key registered for device {device_id!r}"
        reasons.append(Reason(code=ReasonCode.UNKNOWN_DEVICE, detail=detail))
    if reference is None:
        detail = f"no reference values registered for device {device_id!r}"
        reasons.append(Reason(code=ReasonCode.UNKNOWN_DEVICE, detail=detail))
    return reasons


def _decode(envelope: Envelope, reasons: list[Reason]) -> EvidenceClaims | None:
    if envelope.payload_type != EVIDENCE_PAYLOAD_TYPE:
        detail = f"payload type {envelope.payload_type!r}, expected {EVIDENCE_PAYLOAD_TYPE!r}"
        reasons.append(Reason(code=ReasonCode.MALFORMED_EVIDENCE, detail=detail))
        return None
    try:
        return decode_claims(envelope.payload)
    except EvidenceError as exc:
        reasons.append(Reason(code=ReasonCode.MALFORMED_EVIDENCE, detail=str(exc)))
        return None


def _nonce_reasons(
    claims: EvidenceClaims, device_id: str, nonces: NonceIssuer, signed: bool, now: float
) -> list[Reason]:
    if signed:
        code = nonces.consume(device_id, claims.nonce, now)
    else:
        code = nonces.check(device_id, claims.nonce, now)
    if code is None:
        return []
    return [Reason(code=code, detail=f"nonce {claims.nonce.hex()[:16]}... for {device_id!r}")]


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
    return reasons


def _result(
    device_id: str,
    reasons: list[Reason],
    claims: EvidenceClaims | None,
    digest: str,
    policy: AppraisalPolicy,
    now: float,
) -> AttestationResult:
    # Requiring trusted claims too means no path through appraise() can affirm unsigned evidence.
    affirmed = not reasons and claims is not None
    return AttestationResult(
        device_id=device_id,
        status=AttestationStatus.AFFIRMING if affirmed else AttestationStatus.CONTRAINDICATED,
        reasons=tuple(reasons),
        claims=claims,
        evidence_digest=digest,
        issued_at=now,
        expires_at=now + policy.result_ttl_seconds if affirmed else now,
    )
