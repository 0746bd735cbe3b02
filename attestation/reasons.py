"""Reason codes for failed appraisals; apart from `appraisal` so `nonces` can use them too."""

from __future__ import annotations

import enum


class ReasonCode(enum.Enum):
    """Why evidence was not affirmed; each value equals its name, stable for logs and the wire."""

    SIGNATURE_INVALID = "SIGNATURE_INVALID"  # no signature by the device's key over the PAE
    MALFORMED_EVIDENCE = "MALFORMED_EVIDENCE"  # not an envelope, wrong payload type, bad claims
    UNKNOWN_DEVICE = "UNKNOWN_DEVICE"  # no key or no reference values registered for the device
    DEVICE_MISMATCH = "DEVICE_MISMATCH"  # claims name a device other than the one connected
    NONCE_UNKNOWN = "NONCE_UNKNOWN"  # nonce never issued here (or long forgotten)
    NONCE_REPLAYED = "NONCE_REPLAYED"  # nonce already answered once
    NONCE_EXPIRED = "NONCE_EXPIRED"  # nonce answered after its time to live
    NONCE_WRONG_DEVICE = "NONCE_WRONG_DEVICE"  # nonce was issued to a different device
    EVIDENCE_STALE = "EVIDENCE_STALE"  # issued_at older than the policy's maximum age
    CLOCK_SKEW = "CLOCK_SKEW"  # issued_at further in the future than the allowed skew
    COUNTER_REGRESSED = "COUNTER_REGRESSED"  # counter did not grow within the same boot epoch
    MEASUREMENT_FIRMWARE = "MEASUREMENT_FIRMWARE"  # firmware not among the reference values
    MEASUREMENT_CONTROL_SOFTWARE = "MEASUREMENT_CONTROL_SOFTWARE"  # control stack not allowed
    MEASUREMENT_DRIVER_BUILD = "MEASUREMENT_DRIVER_BUILD"  # driver build not allowed
    MEASUREMENT_CALIBRATION = "MEASUREMENT_CALIBRATION"  # calibration digest not allowed
    MEASUREMENT_QUBITS = "MEASUREMENT_QUBITS"  # qubit count differs from the registered one
