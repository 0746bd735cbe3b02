"""Calibration windows: reference values for the figures a device claims beside its digest."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from attestation.appraisal import AttestationStatus, ReasonCode
from attestation.calibration import NO_WINDOWS, CalibrationWindows, Tolerance
from attestation.evidence import EvidenceError, decode_claims, encode_claims
from attestation.keys import SigningKey
from attestation.nonces import NonceIssuer
from tests.unit.attestation.support import (
    REFERENCE,
    Identity,
    make_claims,
    run_appraisal,
    sign_evidence,
)

WINDOWED = dataclasses.replace(
    REFERENCE,
    calibration=CalibrationWindows(
        two_qubit_error=Tolerance(minimum=1e-3, maximum=0.02),
        readout_error=Tolerance(maximum=0.05),
        t1_us=Tolerance(minimum=50),
        t2_us=Tolerance(minimum=20, maximum=400),
    ),
)
INSIDE = {"two_qubit_error": 0.01, "readout_error": 0.03, "t1_us": 80.0, "t2_us": 60.0}


@pytest.fixture
def nonces() -> NonceIssuer:
    return NonceIssuer(ttl_seconds=10)


def _calibration_details(
    key: SigningKey, nonces: NonceIssuer, identity: Identity, **claimed: Any
) -> list[str]:
    evidence = sign_evidence(key, nonces, measurements={**INSIDE, **claimed})
    result = run_appraisal(evidence, nonces, identity, reference=WINDOWED)
    if not result.reasons:
        assert result.status is AttestationStatus.AFFIRMING
    assert {r.code for r in result.reasons} <= {ReasonCode.CALIBRATION_OUT_OF_RANGE}
    return [r.detail for r in result.reasons]


def test_figures_inside_every_window_affirm(
    device_key: SigningKey, nonces: NonceIssuer, genuine: Identity
) -> None:
    assert _calibration_details(device_key, nonces, genuine) == []
    # At the bounds is inside: windows are closed.
    edges = {"two_qubit_error": 1e-3, "readout_error": 0.05, "t1_us": 50.0, "t2_us": 400.0}
    assert _calibration_details(device_key, nonces, genuine, **edges) == []


@pytest.mark.parametrize(
    ("claimed", "detail"),
    [
        (
            {"two_qubit_error": 0.5},
            "two_qubit_error: claimed 0.5, outside the reference window [0.001, 0.02]",
        ),
        ({"two_qubit_error": 1e-4}, "two_qubit_error: claimed 0.0001, outside"),
        (
            {"readout_error": 0.2},
            "readout_error: claimed 0.2, outside the reference window [-inf, 0.05]",
        ),
        ({"t1_us": 49.9}, "t1_us: claimed 49.9, outside the reference window [50, +inf]"),
        ({"t2_us": 401.0}, "t2_us: claimed 401, outside the reference window [20, 400]"),
        (
            {"two_qubit_error": None},
            "two_qubit_error: not claimed, the reference window is [0.001, 0.02]",
        ),
        ({"t2_us": None}, "t2_us: not claimed"),
    ],
)
def test_a_figure_outside_or_missing_from_its_window_fails_with_its_own_code(
    device_key: SigningKey,
    nonces: NonceIssuer,
    genuine: Identity,
    claimed: dict[str, Any],
    detail: str,
) -> None:
    [got] = _calibration_details(device_key, nonces, genuine, **claimed)
    assert got.startswith(detail)


def test_every_figure_out_of_range_is_reported_together(
    device_key: SigningKey, nonces: NonceIssuer, genuine: Identity
) -> None:
    claimed = {"two_qubit_error": 0.5, "readout_error": 0.5, "t1_us": 1.0, "t2_us": 1.0}
    details = _calibration_details(device_key, nonces, genuine, **claimed)
    assert [d.split(":")[0] for d in details] == [
        "two_qubit_error",
        "readout_error",
        "t1_us",
        "t2_us",
    ]


def test_without_windows_only_the_physical_limits_apply(
    device_key: SigningKey, nonces: NonceIssuer, genuine: Identity
) -> None:
    assert REFERENCE.calibration == NO_WINDOWS
    claimed = {"two_qubit_error": 0.5, "readout_error": 0.4, "t1_us": 1e-3}
    evidence = sign_evidence(device_key, nonces, measurements=claimed)
    assert run_appraisal(evidence, nonces, genuine).status is AttestationStatus.AFFIRMING


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("readout_error", 1.5, "'readout_error' must be between 0 and 1"),
        ("readout_error", -0.1, "'readout_error' must be between 0 and 1"),
        ("readout_error", None, "'readout_error' must be a finite number"),
        ("t1_us", 0, "'t1_us' must be a positive number of microseconds"),
        ("t2_us", -5.0, "'t2_us' must be a positive number of microseconds"),
        ("t2_us", "80", "'t2_us' must be a finite number"),
        ("t3_us", 1.0, "unexpected field 't3_us'"),
    ],
)
def test_optional_figures_are_decoded_strictly(name: str, value: object, message: str) -> None:
    raw = json.loads(encode_claims(make_claims(b"n" * 16)))
    raw["measurements"][name] = value
    with pytest.raises(EvidenceError, match=message):
        decode_claims(json.dumps(raw).encode())


def test_optional_figures_round_trip_and_are_left_out_when_absent() -> None:
    plain = make_claims(b"n" * 16)
    assert set(json.loads(encode_claims(plain))["measurements"]) == {
        "firmware",
        "control_software",
        "driver_build",
        "calibration_digest",
        "num_qubits",
        "two_qubit_error",
    }
    full = make_claims(b"n" * 16, measurements=INSIDE)
    assert decode_claims(encode_claims(full)) == full


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "needs a minimum, a maximum or both"),
        ({"minimum": 0.2, "maximum": 0.1}, "minimum 0.2 is above its maximum 0.1"),
        ({"minimum": -1.0}, "finite and >= 0"),
        ({"maximum": float("inf")}, "finite and >= 0"),
        ({"maximum": float("nan")}, "finite and >= 0"),
    ],
)
def test_a_window_that_cannot_mean_anything_is_refused(
    kwargs: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Tolerance(**kwargs)


def test_a_probability_window_above_one_is_refused() -> None:
    with pytest.raises(ValueError, match="readout_error is a probability"):
        CalibrationWindows(readout_error=Tolerance(maximum=2.0))


def test_windows_round_trip_through_their_document() -> None:
    windows = WINDOWED.calibration
    document = windows.as_document()
    assert document == {
        "two_qubit_error": [1e-3, 0.02],
        "readout_error": [None, 0.05],
        "t1_us": [50, None],
        "t2_us": [20, 400],
    }
    assert CalibrationWindows.from_document(json.loads(json.dumps(document))) == windows
    assert CalibrationWindows.from_document({}) == NO_WINDOWS


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "must be an object"),
        ({"t3_us": [1, 2]}, "unknown calibration figure 't3_us'"),
        ({"t1_us": [1]}, "must be \\[minimum, maximum\\]"),
        ({"t1_us": ["1", 2]}, "bounds must be numbers or null"),
        ({"t1_us": [None, None]}, "needs a minimum, a maximum or both"),
    ],
)
def test_a_bad_windows_document_names_what_is_wrong(document: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CalibrationWindows.from_document(document)
