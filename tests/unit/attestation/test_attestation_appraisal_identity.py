"""Appraisal of who signed: the certificate chain, its registration, and `authenticated`; and the
reference values' validity window."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from cryptography import x509

from attestation.appraisal import AttestationResult, AttestationStatus, ReasonCode
from attestation.dsse import sign_envelope
from attestation.keys import KeyKind, SigningKey
from attestation.nonces import NonceIssuer
from attestation.pki import fingerprint
from attestation.receipts import RECEIPT_PAYLOAD_TYPE
from tests.unit.attestation.support import (
    DEVICE,
    NOW,
    NOW_DT,
    REFERENCE,
    Identity,
    Pki,
    make_pki,
    pem,
    run_appraisal,
    sign_evidence,
)

SECOND = dt.timedelta(seconds=1)
DAY = dt.timedelta(days=1)
R = ReasonCode


@pytest.fixture
def nonces() -> NonceIssuer:
    return NonceIssuer(ttl_seconds=10)


def _identity(
    pki: Pki,
    key: SigningKey,
    *,
    start: dt.datetime = NOW_DT - DAY,
    days: int = 30,
    device_id: str = DEVICE,
) -> Identity:
    """A chain for `key` via the intermediate, registered under its own fingerprint."""
    cert = pki.device_cert(key, start=start, days=days, device_id=device_id)
    return Identity(
        chain=pki.chain(cert), anchor=pki.anchor, registered=frozenset({fingerprint(cert)})
    )


def _codes(result: AttestationResult) -> list[ReasonCode]:
    return [r.code for r in result.reasons]


def _certs(chain: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(chain)


def _unauthenticated(
    nonces: NonceIssuer, evidence_nonce: bytes, result: AttestationResult, codes: list[ReasonCode]
) -> None:
    """The result has exactly `codes`, holds nothing against the device, and burnt no nonce."""
    assert _codes(result) == codes
    assert result.status is AttestationStatus.CONTRAINDICATED
    assert not result.authenticated
    assert result.claims is None
    assert nonces.check(DEVICE, evidence_nonce, NOW) is None


# --- chains that verify --------------------------------------------------------------------


@pytest.mark.parametrize("kind", [KeyKind.ED25519, KeyKind.ECDSA_P256])
@pytest.mark.parametrize("ca_kind", [KeyKind.ECDSA_P256, KeyKind.ED25519])
def test_device_via_intermediate_affirms(
    nonces: NonceIssuer, kind: KeyKind, ca_kind: KeyKind
) -> None:
    key = SigningKey.generate(kind)
    identity = _identity(make_pki(start=NOW_DT - 10 * DAY, ca_kind=ca_kind), key)
    result = run_appraisal(sign_evidence(key, nonces), nonces, identity)
    assert result.reasons == ()
    assert result.affirming(NOW)
    assert result.authenticated
    assert result.claims is not None


def test_registered_fingerprint_in_openssl_spelling(
    device_key: SigningKey, nonces: NonceIssuer, genuine: Identity
) -> None:
    (fp,) = genuine.registered
    spelled = ":".join(fp[i : i + 2] for i in range(0, 64, 2)).upper()
    identity = dataclasses.replace(genuine, registered=frozenset({spelled}))
    assert run_appraisal(sign_evidence(device_key, nonces), nonces, identity).affirming(NOW)


# --- chains that do not --------------------------------------------------------------------


def test_device_certificate_expired_by_one_second(
    pki: Pki, device_key: SigningKey, nonces: NonceIssuer
) -> None:
    identity = _identity(pki, device_key, start=NOW_DT - DAY - SECOND, days=1)
    nonce = nonces.issue(DEVICE, NOW - 2)
    evidence = sign_evidence(device_key, nonces, nonce=nonce)
    expired = run_appraisal(evidence, nonces, identity)
    _unauthenticated(nonces, nonce, expired, [R.CERT_EXPIRED, R.SIGNATURE_INVALID])
    assert "no certificate key" in expired.reasons[1].detail
    at_the_end = run_appraisal(evidence, nonces, identity, now=NOW - 1)  # not_after is inclusive
    assert at_the_end.affirming(NOW - 1)


def test_device_certificate_not_yet_valid_by_one_second(
    pki: Pki, device_key: SigningKey, nonces: NonceIssuer
) -> None:
    identity = _identity(pki, device_key, start=NOW_DT + SECOND)
    nonce = nonces.issue(DEVICE, NOW - 2)
    evidence = sign_evidence(device_key, nonces, nonce=nonce)
    result = run_appraisal(evidence, nonces, identity)
    _unauthenticated(nonces, nonce, result, [R.CERT_NOT_YET_VALID, R.SIGNATURE_INVALID])
    assert run_appraisal(evidence, nonces, identity, now=NOW + 1).affirming(NOW + 1)


@pytest.mark.parametrize("which", ["device", "intermediate"])
def test_revoked_certificate_in_the_chain(
    pki: Pki, device_key: SigningKey, nonces: NonceIssuer, genuine: Identity, which: str
) -> None:
    device_cert = next(c for c in _certs(genuine.chain) if c != pki.intermediate)
    serial = (device_cert if which == "device" else pki.intermediate).serial_number
    identity = dataclasses.replace(genuine, revoked=frozenset({format(serial, "x")}))
    nonce = nonces.issue(DEVICE, NOW - 2)
    result = run_appraisal(sign_evidence(device_key, nonces, nonce=nonce), nonces, identity)
    _unauthenticated(nonces, nonce, result, [R.CERT_REVOKED, R.SIGNATURE_INVALID])
    assert f"serial {format(serial, 'x')}" in result.reasons[0].detail


def test_chain_from_another_ca(device_key: SigningKey, nonces: NonceIssuer, pki: Pki) -> None:
    rogue = _identity(make_pki(start=NOW_DT - 10 * DAY), device_key)
    identity = dataclasses.replace(rogue, anchor=pki.anchor)  # registered as if the operator erred
    nonce = nonces.issue(DEVICE, NOW - 2)
    result = run_appraisal(sign_evidence(device_key, nonces, nonce=nonce), nonces, identity)
    _unauthenticated(nonces, nonce, result, [R.CERT_UNTRUSTED, R.SIGNATURE_INVALID])
    assert "not signed by this CA" in result.reasons[0].detail


def test_reordered_chain(device_key: SigningKey, nonces: NonceIssuer, genuine: Identity) -> None:
    certs = _certs(genuine.chain)
    identity = dataclasses.replace(genuine, chain=pem(*reversed(certs)))
    nonce = nonces.issue(DEVICE, NOW - 2)
    result = run_appraisal(sign_evidence(device_key, nonces, nonce=nonce), nonces, identity)
    _unauthenticated(nonces, nonce, result, [R.CERT_UNTRUSTED, R.SIGNATURE_INVALID])


def test_valid_chain_that_is_not_the_registered_one(
    pki: Pki, device_key: SigningKey, nonces: NonceIssuer, genuine: Identity
) -> None:
    # Same device, same key, a second certificate the operator never registered.
    reissued = _identity(pki, device_key)
    identity = dataclasses.replace(reissued, registered=genuine.registered)
    nonce = nonces.issue(DEVICE, NOW - 2)
    result = run_appraisal(sign_evidence(device_key, nonces, nonce=nonce), nonces, identity)
    _unauthenticated(nonces, nonce, result, [R.CERT_NOT_REGISTERED])
    assert "not one registered for device 'qpu-1'" in result.reasons[0].detail


def test_certificate_for_another_device(
    pki: Pki, device_key: SigningKey, nonces: NonceIssuer
) -> None:
    identity = _identity(pki, device_key, device_id="qpu-2")  # registered under qpu-1 in error
    nonce = nonces.issue(DEVICE, NOW - 2)
    result = run_appraisal(sign_evidence(device_key, nonces, nonce=nonce), nonces, identity)
    _unauthenticated(nonces, nonce, result, [R.DEVICE_MISMATCH])
    assert "certificate is for device 'qpu-2', connected as 'qpu-1'" in result.reasons[0].detail


def test_identity_faults_come_first_in_order(
    pki: Pki, device_key: SigningKey, other_key: SigningKey, nonces: NonceIssuer
) -> None:
    identity = dataclasses.replace(
        _identity(pki, device_key, device_id="qpu-2"), registered=frozenset({"ab" * 32})
    )
    forged = sign_evidence(other_key, nonces, device_id="qpu-9", issued_at=NOW - 100)
    result = run_appraisal(forged, nonces, identity, reference=None)
    assert _codes(result) == [
        R.DEVICE_MISMATCH,
        R.CERT_NOT_REGISTERED,
        R.UNKNOWN_DEVICE,
        R.SIGNATURE_INVALID,
        R.DEVICE_MISMATCH,
        R.EVIDENCE_STALE,
    ]


# --- authenticated -------------------------------------------------------------------------


def test_impostor_with_the_public_certificate_is_not_authenticated(
    device_key: SigningKey, other_key: SigningKey, nonces: NonceIssuer, genuine: Identity
) -> None:
    nonce = nonces.issue(DEVICE, NOW - 2)
    forged = sign_evidence(other_key, nonces, nonce=nonce, measurements={"firmware": "fw-evil"})
    result = run_appraisal(forged, nonces, genuine)
    _unauthenticated(nonces, nonce, result, [R.SIGNATURE_INVALID, R.MEASUREMENT_FIRMWARE])
    answer = sign_evidence(device_key, nonces, nonce=nonce)
    assert run_appraisal(answer, nonces, genuine).affirming(NOW)  # the genuine device is unharmed


def test_genuine_device_with_a_bad_measurement_is_authenticated(
    device_key: SigningKey, nonces: NonceIssuer, genuine: Identity
) -> None:
    nonce = nonces.issue(DEVICE, NOW - 2)
    evidence = sign_evidence(device_key, nonces, nonce=nonce, measurements={"firmware": "fw-0"})
    result = run_appraisal(evidence, nonces, genuine)
    assert _codes(result) == [R.MEASUREMENT_FIRMWARE]
    assert result.status is AttestationStatus.CONTRAINDICATED
    assert result.authenticated
    assert result.claims is not None
    assert result.claims.measurements.firmware == "fw-0"
    assert nonces.check(DEVICE, nonce, NOW) is R.NONCE_REPLAYED  # consumed


def test_counter_rollback_by_the_genuine_device_is_authenticated(
    device_key: SigningKey, nonces: NonceIssuer, genuine: Identity
) -> None:
    result = run_appraisal(sign_evidence(device_key, nonces, counter=3), nonces, genuine)
    assert _codes(result) == [R.COUNTER_REGRESSED]
    assert result.authenticated


def test_replayed_genuine_evidence_is_not_authenticated(
    device_key: SigningKey, nonces: NonceIssuer, genuine: Identity
) -> None:
    evidence = sign_evidence(device_key, nonces)
    assert run_appraisal(evidence, nonces, genuine).affirming(NOW)
    replay = run_appraisal(evidence, nonces, genuine, last_counter=None)
    assert _codes(replay) == [R.NONCE_REPLAYED]
    assert not replay.authenticated
    assert replay.claims is None


def test_late_answer_from_the_genuine_device_is_not_authenticated(
    device_key: SigningKey, nonces: NonceIssuer, genuine: Identity
) -> None:
    # A timeout recovers by itself (Keylime): nothing here should quarantine the device.
    late = sign_evidence(device_key, nonces, nonce=nonces.issue(DEVICE, NOW - 10))
    result = run_appraisal(late, nonces, genuine)
    assert _codes(result) == [R.NONCE_EXPIRED]
    assert not result.authenticated


def test_a_receipt_the_device_signed_is_not_authenticated_evidence(
    device_key: SigningKey, nonces: NonceIssuer, genuine: Identity
) -> None:
    receipt = sign_envelope(RECEIPT_PAYLOAD_TYPE, b'{"job_id":"job-1"}', device_key)
    result = run_appraisal(receipt.to_json(), nonces, genuine)
    assert _codes(result) == [R.PAYLOAD_TYPE_WRONG]
    assert not result.authenticated


def test_unregistered_device_is_not_authenticated(
    device_key: SigningKey, nonces: NonceIssuer, genuine: Identity
) -> None:
    identity = dataclasses.replace(genuine, registered=frozenset())
    nonce = nonces.issue(DEVICE, NOW - 2)
    result = run_appraisal(sign_evidence(device_key, nonces, nonce=nonce), nonces, identity)
    _unauthenticated(nonces, nonce, result, [R.UNKNOWN_DEVICE])


# --- reference values' window --------------------------------------------------------------


@pytest.mark.parametrize(
    ("not_before", "not_after", "codes"),
    [
        (NOW + 0.001, None, [R.REFERENCE_NOT_YET_VALID]),
        (NOW, None, []),
        (None, NOW, [R.REFERENCE_EXPIRED]),  # exactly at not_after: the window is half-open
        (None, NOW + 0.001, []),
        (NOW - 10, NOW + 10, []),
        (NOW - 10, NOW - 1, [R.REFERENCE_EXPIRED]),
        (NOW + 1, NOW + 10, [R.REFERENCE_NOT_YET_VALID]),
    ],
)
def test_reference_window_edges(
    device_key: SigningKey,
    nonces: NonceIssuer,
    genuine: Identity,
    not_before: float | None,
    not_after: float | None,
    codes: list[ReasonCode],
) -> None:
    reference = dataclasses.replace(
        REFERENCE, version=7, not_before=not_before, not_after=not_after
    )
    result = run_appraisal(sign_evidence(device_key, nonces), nonces, genuine, reference=reference)
    assert _codes(result) == codes
    assert result.affirming(NOW) is (codes == [])
    if codes:
        assert "reference values version 7" in result.reasons[0].detail
        assert result.authenticated  # the device is fine; the facility's values lapsed


def test_expired_reference_still_checks_the_measurements(
    device_key: SigningKey, nonces: NonceIssuer, genuine: Identity
) -> None:
    reference = dataclasses.replace(REFERENCE, not_after=NOW - 1)
    evidence = sign_evidence(device_key, nonces, measurements={"firmware": "fw-0", "num_qubits": 4})
    result = run_appraisal(evidence, nonces, genuine, reference=reference)
    assert _codes(result) == [R.REFERENCE_EXPIRED, R.MEASUREMENT_FIRMWARE, R.MEASUREMENT_QUBITS]


def test_reference_window_is_reported_for_malformed_evidence_too(
    nonces: NonceIssuer, genuine: Identity
) -> None:
    reference = dataclasses.replace(REFERENCE, not_before=NOW + 60)
    result = run_appraisal(b"{", nonces, genuine, reference=reference)
    assert _codes(result) == [R.MALFORMED_EVIDENCE, R.REFERENCE_NOT_YET_VALID]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"not_before": NOW, "not_after": NOW}, "earlier than not_after"),
        ({"not_before": NOW + 1, "not_after": NOW}, "earlier than not_after"),
        ({"not_after": float("inf")}, "finite"),
        ({"not_before": float("nan")}, "finite"),
        ({"version": 0}, "version"),
    ],
)
def test_reference_values_refuse_a_bad_window(changes: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(REFERENCE, **changes)  # type: ignore[arg-type]


def test_reference_values_defaults() -> None:
    assert (REFERENCE.not_before, REFERENCE.not_after, REFERENCE.version) == (None, None, 1)
