"""Reason codes for failed appraisals; apart from `appraisal` so `nonces` and `pki` can use them."""

from __future__ import annotations

import enum


class ReasonCode(enum.Enum):
    """Why evidence was not affirmed; each value equals its name, stable for logs and the wire."""

    CERT_UNTRUSTED = "CERT_UNTRUSTED"  # chain malformed, badly signed, not to the anchor, bad CA
    CERT_EXPIRED = "CERT_EXPIRED"  # a certificate of the chain (or the anchor) is past its end
    CERT_NOT_YET_VALID = "CERT_NOT_YET_VALID"  # a certificate of the chain is not valid yet
    CERT_REVOKED = "CERT_REVOKED"  # the device or an intermediate certificate is revoked
    CERT_NOT_REGISTERED = "CERT_NOT_REGISTERED"  # valid chain, but not a registered certificate
    SIGNATURE_INVALID = "SIGNATURE_INVALID"  # no signature by the certificate's key over the PAE
    PAYLOAD_TYPE_WRONG = "PAYLOAD_TYPE_WRONG"  # the envelope's payloadType is not evidence
    MALFORMED_EVIDENCE = "MALFORMED_EVIDENCE"  # not a DSSE envelope, or claims that do not decode
    UNKNOWN_DEVICE = "UNKNOWN_DEVICE"  # no certificate or no reference values registered
    DEVICE_MISMATCH = "DEVICE_MISMATCH"  # certificate or claims name another device
    NONCE_UNKNOWN = "NONCE_UNKNOWN"  # nonce never issued here (or long forgotten)
    NONCE_REPLAYED = "NONCE_REPLAYED"  # nonce already answered once
    NONCE_EXPIRED = "NONCE_EXPIRED"  # nonce answered after its time to live
    NONCE_WRONG_DEVICE = "NONCE_WRONG_DEVICE"  # nonce was issued to a different device
    EVIDENCE_STALE = "EVIDENCE_STALE"  # issued_at older than the policy's maximum age
    CLOCK_SKEW = "CLOCK_SKEW"  # issued_at further in the future than the allowed skew
    COUNTER_REGRESSED = "COUNTER_REGRESSED"  # counter did not grow within the same boot epoch
    REFERENCE_NOT_YET_VALID = "REFERENCE_NOT_YET_VALID"  # now is before the values' not_before
    REFERENCE_EXPIRED = "REFERENCE_EXPIRED"  # now is at or after the values' not_after
    MEASUREMENT_FIRMWARE = "MEASUREMENT_FIRMWARE"  # firmware not among the reference values
    MEASUREMENT_CONTROL_SOFTWARE = "MEASUREMENT_CONTROL_SOFTWARE"  # control stack not allowed
    MEASUREMENT_DRIVER_BUILD = "MEASUREMENT_DRIVER_BUILD"  # driver build not allowed
    MEASUREMENT_CALIBRATION = "MEASUREMENT_CALIBRATION"  # calibration digest not allowed
    MEASUREMENT_QUBITS = "MEASUREMENT_QUBITS"  # qubit count differs from the registered one
    CALIBRATION_OUT_OF_RANGE = "CALIBRATION_OUT_OF_RANGE"  # a calibration figure outside its window
