"""The Attester side: the claims a driver makes about its device, encoded and signed as Evidence.

The encoding is canonical (sorted keys, compact, nonce in hex) so a claim set has exactly one byte
string, and decoding is strict: unknown or mistyped fields are refused with the field's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from attestation._json import (
    StrictJSONError,
    canonical_dumps,
    get_hex,
    get_int,
    get_number,
    get_str,
    object_with,
    strict_loads,
)
from attestation.dsse import Envelope, sign_envelope
from attestation.keys import SigningKey

EVIDENCE_PAYLOAD_TYPE = "application/vnd.qtestbed.evidence.v1+json"

# EAT (RFC 9711) nonces are 8 to 64 bytes; anything else cannot have come from a NonceIssuer.
MIN_NONCE_BYTES = 8
MAX_NONCE_BYTES = 64

_MEASUREMENT_FIELDS = frozenset(
    {
        "firmware",
        "control_software",
        "driver_build",
        "calibration_digest",
        "num_qubits",
        "two_qubit_error",
    }
)
# Calibration figures a device may leave out (it has no such figure); when present they are
# encoded, and when absent left out, so older claim sets keep their exact bytes.
_OPTIONAL_PROBABILITIES = ("readout_error",)
_OPTIONAL_DURATIONS = ("t1_us", "t2_us")
_CLAIM_FIELDS = frozenset(
    {"device_id", "nonce", "issued_at", "boot_epoch", "counter", "measurements"}
)


class EvidenceError(ValueError):
    """Evidence claims could not be decoded; the message names the bad or missing field."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Measurements:
    """What the device is running, compared against the facility's reference values."""

    firmware: str
    control_software: str
    driver_build: str
    calibration_digest: str
    num_qubits: int
    two_qubit_error: float | None
    readout_error: float | None = None
    t1_us: float | None = None  # energy relaxation time, microseconds
    t2_us: float | None = None  # dephasing time, microseconds

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "firmware": self.firmware,
            "control_software": self.control_software,
            "driver_build": self.driver_build,
            "calibration_digest": self.calibration_digest,
            "num_qubits": self.num_qubits,
            "two_qubit_error": self.two_qubit_error,
        }
        for name in (*_OPTIONAL_PROBABILITIES, *_OPTIONAL_DURATIONS):
            if (value := getattr(self, name)) is not None:
                data[name] = value
        return data


@dataclass(frozen=True, kw_only=True, slots=True)
class EvidenceClaims:
    """One answer to one challenge.

    `boot_epoch` changes on every agent start and `counter` increases within an epoch, so the
    verifier can tell a replayed or rolled-back answer from a fresh one.
    """

    device_id: str
    nonce: bytes
    issued_at: float
    boot_epoch: str
    counter: int
    measurements: Measurements


def encode_claims(claims: EvidenceClaims) -> bytes:
    return canonical_dumps(
        {
            "device_id": claims.device_id,
            "nonce": claims.nonce.hex(),
            "issued_at": claims.issued_at,
            "boot_epoch": claims.boot_epoch,
            "counter": claims.counter,
            "measurements": claims.measurements.as_dict(),
        }
    )


def decode_claims(data: bytes) -> EvidenceClaims:
    try:
        raw = object_with(strict_loads(data), _CLAIM_FIELDS, "evidence claims")
        return EvidenceClaims(
            device_id=get_str(raw, "device_id"),
            nonce=get_hex(raw, "nonce", min_bytes=MIN_NONCE_BYTES, max_bytes=MAX_NONCE_BYTES),
            issued_at=get_number(raw, "issued_at"),
            boot_epoch=get_str(raw, "boot_epoch"),
            counter=get_int(raw, "counter"),
            measurements=_decode_measurements(raw["measurements"]),
        )
    except StrictJSONError as exc:
        raise EvidenceError(f"malformed evidence: {exc}") from exc


def _decode_measurements(value: object) -> Measurements:
    optional = (*_OPTIONAL_PROBABILITIES, *_OPTIONAL_DURATIONS)
    fields = _MEASUREMENT_FIELDS | (
        value.keys() & set(optional) if isinstance(value, dict) else set()
    )
    raw = object_with(value, fields, "measurements")
    figures = {name: _probability(raw, name) for name in _OPTIONAL_PROBABILITIES if name in raw}
    figures |= {name: _duration(raw, name) for name in _OPTIONAL_DURATIONS if name in raw}
    return Measurements(
        firmware=get_str(raw, "firmware"),
        control_software=get_str(raw, "control_software"),
        driver_build=get_str(raw, "driver_build"),
        calibration_digest=get_str(raw, "calibration_digest"),
        num_qubits=get_int(raw, "num_qubits"),
        two_qubit_error=None
        if raw["two_qubit_error"] is None
        else _probability(raw, "two_qubit_error"),
        **figures,
    )


def _probability(raw: dict[str, Any], name: str) -> float:
    """An error rate: whatever the reference values say, never outside [0, 1]."""
    value = get_number(raw, name)
    if not 0.0 <= value <= 1.0:
        raise StrictJSONError(f"field {name!r} must be between 0 and 1")
    return value


def _duration(raw: dict[str, Any], name: str) -> float:
    value = get_number(raw, name)
    if value <= 0:
        raise StrictJSONError(f"field {name!r} must be a positive number of microseconds")
    return value


def make_evidence(claims: EvidenceClaims, key: SigningKey) -> Envelope:
    return sign_envelope(EVIDENCE_PAYLOAD_TYPE, encode_claims(claims), key)
