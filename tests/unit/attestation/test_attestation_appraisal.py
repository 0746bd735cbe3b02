from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from attestation.appraisal import (
    AppraisalPolicy,
    AttestationResult,
    AttestationStatus,
    ReasonCode,
)
from attestation.dsse import Envelope, sign_envelope
from attestation.evidence import encode_claims
from attestation.keys import SigningKey
from attestation.nonces import NonceIssuer
from tests.unit.attestation.support import (
    DEVICE,
    GOOD_MEASUREMENTS,
    NOW,
    REFERENCE,
    Identity,
    make_claims,
    run_appraisal,
    sign_evidence,
)


@pytest.fixture
def nonces() -> NonceIssuer:
    return NonceIssuer(ttl_seconds=10)


def _assert_only(result: AttestationResult, code: ReasonCode) -> None:
    assert [r.code for r in result.reasons] == [code]
    assert result.status is AttestationStatus.CONTRAINDICATED
    assert result.expires_at == NOW
    assert not result.affirming(NOW)


def test_good_evidence_affirms(
    device_key: SigningKey, nonces: NonceIssuer, genuine: Identity
) -> None:
    evidence = sign_evidence(device_key, nonces)
    result = run_appraisal(evidence, nonces, genuine)
    assert result.status is AttestationStatus.AFFIRMING
    assert result.reasons == ()
    assert result.claims is not None
    assert result.claims.measurements == GOOD_MEASUREMENTS
    assert result.device_id == DEVICE
    assert result.evidence_digest == Envelope.from_json(evidence).digest()
    assert (result.issued_at, result.expires_at) == (NOW, NOW + 300)
    assert result.affirming(NOW + 299.9)
    assert not result.affirming(NOW + 300)


def test_signature_invalid_does_not_consume_the_nonce(
    device_key: SigningKey, other_key: SigningKey, nonces: NonceIssuer, genuine: Identity
) -> None:
    nonce = nonces.issue(DEVICE, NOW - 2)
    forged = sign_evidence(other_key, nonces, nonce=nonce)
    result = run_appraisal(forged, nonces, genuine)
    _assert_only(result, ReasonCode.SIGNATURE_INVALID)
    assert result.claims is None  # unauthenticated claims are not handed out
    answer = sign_evidence(device_key, nonces, nonce=nonce)
    assert run_appraisal(answer, nonces, genuine).affirming(NOW)


def test_tampered_payload_is_signature_invalid(
    device_key: SigningKey, nonces: NonceIssuer, genuine: Identity
) -> None:
    env = Envelope.from_json(sign_evidence(device_key, nonces))
    tampered = dataclasses.replace(env, payload=env.payload.replace(b"fw-1.3", b"fw-1.2"))
    result = run_appraisal(tampered.to_json(), nonces, genuine)
    _assert_only(result, ReasonCode.SIGNATURE_INVALID)


@pytest.mark.parametrize(
    "evidence",
    [b"not json", b'{"payloadType": "x"}', b""],
)
def test_malformed_envelope(
    device_key: SigningKey, nonces: NonceIssuer, evidence: bytes, genuine: Identity
) -> None:
    result = run_appraisal(evidence, nonces, genuine)
    _assert_only(result, ReasonCode.MALFORMED_EVIDENCE)
    assert result.claims is None
    assert len(result.evidence_digest) == 64


def test_wrong_payload_type(device_key: SigningKey, nonces: NonceIssuer, genuine: Identity) -> None:
    # Was MALFORMED_EVIDENCE before PAYLOAD_TYPE_WRONG existed; the detail is unchanged.
    nonce = nonces.issue(DEVICE, NOW)
    claims = make_claims(nonce)
    env = sign_envelope(
        "application/vnd.qtestbed.receipt.v1+json", encode_claims(claims), device_key
    )
    result = run_appraisal(env.to_json(), nonces, genuine)
    _assert_only(result, ReasonCode.PAYLOAD_TYPE_WRONG)
    assert "payload type" in result.reasons[0].detail
    # Signed by the device, but not an answer to this challenge: nothing to hold against it.
    assert not result.authenticated
    assert result.claims is None
    assert nonces.check(DEVICE, nonce, NOW) is None


def test_signed_but_undecodable_claims_are_malformed(
    device_key: SigningKey, nonces: NonceIssuer, genuine: Identity
) -> None:
    env = sign_envelope(
        "application/vnd.qtestbed.evidence.v1+json", b'{"device_id": "qpu-1"}', device_key
    )
    result = run_appraisal(env.to_json(), nonces, genuine)
    _assert_only(result, ReasonCode.MALFORMED_EVIDENCE)
    assert "missing field" in result.reasons[0].detail


def test_no_registered_key_is_unknown_device(
    device_key: SigningKey, nonces: NonceIssuer, genuine: Identity
) -> None:
    nonce = nonces.issue(DEVICE, NOW - 2)
    result = run_appraisal(
        sign_evidence(device_key, nonces, nonce=nonce), nonces, _unregistered(genuine)
    )
    _assert_only(result, ReasonCode.UNKNOWN_DEVICE)
    assert "no attestation key" in result.reasons[0].detail
    assert nonces.check(DEVICE, nonce, NOW) is None  # unverifiable evidence burns nothing


def test_no_reference_values_is_unknown_device(
    device_key: SigningKey, nonces: NonceIssuer, genuine: Identity
) -> None:
    evidence = sign_evidence(device_key, nonces)
    result = run_appraisal(evidence, nonces, genuine, reference=None)
    _assert_only(result, ReasonCode.UNKNOWN_DEVICE)
    assert "no reference values" in result.reasons[0].detail


def test_device_mismatch(device_key: SigningKey, nonces: NonceIssuer, genuine: Identity) -> None:
    evidence = sign_evidence(device_key, nonces, device_id="qpu-2")
    result = run_appraisal(evidence, nonces, genuine)
    _assert_only(result, ReasonCode.DEVICE_MISMATCH)
    assert "'qpu-2'" in result.reasons[0].detail


def test_nonce_unknown(device_key: SigningKey, nonces: NonceIssuer, genuine: Identity) -> None:
    evidence = sign_evidence(device_key, nonces, nonce=b"\x01" * 32)
    _assert_only(run_appraisal(evidence, nonces, genuine), ReasonCode.NONCE_UNKNOWN)


def test_nonce_replayed(device_key: SigningKey, nonces: NonceIssuer, genuine: Identity) -> None:
    evidence = sign_evidence(device_key, nonces)
    assert run_appraisal(evidence, nonces, genuine).affirming(NOW)
    replay = run_appraisal(evidence, nonces, genuine, last_counter=None)
    _assert_only(replay, ReasonCode.NONCE_REPLAYED)


def test_nonce_expired(device_key: SigningKey, nonces: NonceIssuer, genuine: Identity) -> None:
    nonce = nonces.issue(DEVICE, NOW - 10)
    evidence = sign_evidence(device_key, nonces, nonce=nonce)
    _assert_only(run_appraisal(evidence, nonces, genuine), ReasonCode.NONCE_EXPIRED)


def test_nonce_wrong_device(device_key: SigningKey, nonces: NonceIssuer, genuine: Identity) -> None:
    nonce = nonces.issue("qpu-2", NOW - 2)
    evidence = sign_evidence(device_key, nonces, nonce=nonce)
    result = run_appraisal(evidence, nonces, genuine)
    _assert_only(result, ReasonCode.NONCE_WRONG_DEVICE)


def test_evidence_stale(device_key: SigningKey, nonces: NonceIssuer, genuine: Identity) -> None:
    at_limit = sign_evidence(device_key, nonces, issued_at=NOW - 30)
    assert run_appraisal(at_limit, nonces, genuine).affirming(NOW)
    stale = sign_evidence(device_key, nonces, issued_at=NOW - 30.5, counter=6)
    result = run_appraisal(stale, nonces, genuine)
    _assert_only(result, ReasonCode.EVIDENCE_STALE)


def test_clock_skew(device_key: SigningKey, nonces: NonceIssuer, genuine: Identity) -> None:
    at_limit = sign_evidence(device_key, nonces, issued_at=NOW + 5)
    assert run_appraisal(at_limit, nonces, genuine).affirming(NOW)
    future = sign_evidence(device_key, nonces, issued_at=NOW + 5.5, counter=6)
    _assert_only(run_appraisal(future, nonces, genuine), ReasonCode.CLOCK_SKEW)


@pytest.mark.parametrize("counter", [4, 3, 0])
def test_counter_regressed_within_a_boot_epoch(
    device_key: SigningKey, nonces: NonceIssuer, counter: int, genuine: Identity
) -> None:
    evidence = sign_evidence(device_key, nonces, counter=counter)
    result = run_appraisal(evidence, nonces, genuine)
    _assert_only(result, ReasonCode.COUNTER_REGRESSED)


def test_counter_restarts_in_a_new_boot_epoch(
    device_key: SigningKey, nonces: NonceIssuer, genuine: Identity
) -> None:
    evidence = sign_evidence(device_key, nonces, boot_epoch="boot-2", counter=0)
    assert run_appraisal(evidence, nonces, genuine).affirming(NOW)


@pytest.mark.parametrize(
    ("change", "code", "expected"),
    [
        ({"firmware": "fw-0.9"}, ReasonCode.MEASUREMENT_FIRMWARE, "fw-1.2"),
        ({"control_software": "ctl-3"}, ReasonCode.MEASUREMENT_CONTROL_SOFTWARE, "ctl-4"),
        ({"driver_build": "drv-evil"}, ReasonCode.MEASUREMENT_DRIVER_BUILD, "drv-abc"),
        ({"calibration_digest": "d" * 64}, ReasonCode.MEASUREMENT_CALIBRATION, "c" * 64),
        ({"num_qubits": 4}, ReasonCode.MEASUREMENT_QUBITS, "expected 5"),
    ],
)
def test_each_measurement_is_checked(
    device_key: SigningKey,
    nonces: NonceIssuer,
    change: dict[str, Any],
    code: ReasonCode,
    expected: str,
    genuine: Identity,
) -> None:
    evidence = sign_evidence(device_key, nonces, measurements=change)
    result = run_appraisal(evidence, nonces, genuine)
    _assert_only(result, code)
    detail = result.reasons[0].detail
    assert expected in detail
    assert str(next(iter(change.values()))) in detail.split("got ")[1]


def test_every_fault_is_reported_together(
    device_key: SigningKey, nonces: NonceIssuer, genuine: Identity
) -> None:
    evidence = sign_evidence(
        device_key,
        nonces,
        device_id="qpu-9",
        issued_at=NOW - 100,
        counter=2,
        measurements={"firmware": "fw-0", "driver_build": "drv-x", "num_qubits": 7},
    )
    result = run_appraisal(evidence, nonces, genuine)
    assert [r.code for r in result.reasons] == [
        ReasonCode.DEVICE_MISMATCH,
        ReasonCode.EVIDENCE_STALE,
        ReasonCode.COUNTER_REGRESSED,
        ReasonCode.MEASUREMENT_FIRMWARE,
        ReasonCode.MEASUREMENT_DRIVER_BUILD,
        ReasonCode.MEASUREMENT_QUBITS,
    ]
    assert result.status is AttestationStatus.CONTRAINDICATED
    assert result.claims is not None  # signed, so the claims are authentic even though wrong


def test_forged_evidence_reports_all_its_faults_too(
    device_key: SigningKey, other_key: SigningKey, nonces: NonceIssuer, genuine: Identity
) -> None:
    nonce = nonces.issue("qpu-2", NOW - 2)
    forged = sign_evidence(
        other_key, nonces, nonce=nonce, issued_at=NOW + 60, measurements={"firmware": "fw-0"}
    )
    result = run_appraisal(forged, nonces, genuine)
    assert result.codes == {
        ReasonCode.SIGNATURE_INVALID,
        ReasonCode.NONCE_WRONG_DEVICE,
        ReasonCode.CLOCK_SKEW,
        ReasonCode.MEASUREMENT_FIRMWARE,
    }
    assert result.reasons[0].code is ReasonCode.SIGNATURE_INVALID
    assert nonces.consume("qpu-2", nonce, NOW) is None  # the forgery did not burn it


def test_unknown_device_with_nothing_registered_reports_both(
    device_key: SigningKey, nonces: NonceIssuer, genuine: Identity
) -> None:
    result = run_appraisal(
        sign_evidence(device_key, nonces), nonces, _unregistered(genuine), reference=None
    )
    assert [r.code for r in result.reasons] == [ReasonCode.UNKNOWN_DEVICE] * 2
    assert result.status is AttestationStatus.CONTRAINDICATED


@pytest.mark.parametrize(
    "field", ["firmware", "control_software", "driver_build", "calibration_digest"]
)
def test_reference_values_refuse_empty_sets(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(REFERENCE, **{field: frozenset()})  # type: ignore[arg-type]


def test_reference_values_refuse_zero_qubits() -> None:
    with pytest.raises(ValueError, match="num_qubits"):
        dataclasses.replace(REFERENCE, num_qubits=0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_evidence_age_seconds": 0},
        {"result_ttl_seconds": -1},
        {"max_clock_skew_seconds": -0.1},
    ],
)
def test_policy_refuses_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="appraisal policy"):
        AppraisalPolicy(**kwargs)


def _unregistered(identity: Identity) -> Identity:
    return dataclasses.replace(identity, registered=frozenset())
