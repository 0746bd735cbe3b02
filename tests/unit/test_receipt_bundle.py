"""Offline receipt verification: an untouched bundle passes, any altered field fails."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from typing import Any

import pytest

from attestation.dsse import Envelope
from attestation.evidence import EvidenceClaims, Measurements, make_evidence
from attestation.keys import KeyKind, SigningKey
from attestation.pki import cert_to_pem, create_ca, device_uri, issue_certificate
from attestation.receipts import ReceiptClaims, decode_receipt, result_digest, sign_receipt
from qtestbed.receipt_bundle import ResultBundle, verify_bundle

NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)
CIRCUIT = b'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\ncreg c[2];\nh q[0];\n'
COUNTS = {"00": 510, "11": 490}


def _facility() -> tuple[bytes, SigningKey, bytes]:
    ca_key = SigningKey.generate(KeyKind.ECDSA_P256)
    ca = create_ca("root", ca_key, now=NOW - dt.timedelta(days=1), days=30)
    device_key = SigningKey.generate(KeyKind.ED25519)
    cert = issue_certificate(
        ca_key=ca_key,
        ca_cert=ca,
        subject_cn="sim-open",
        public_key=device_key.public_key,
        now=NOW - dt.timedelta(days=1),
        days=30,
        uris=[device_uri("sim-open")],
    )
    return cert_to_pem(ca), device_key, cert_to_pem(cert)


def _bundle(device_key: SigningKey, chain: bytes) -> ResultBundle:
    evidence = make_evidence(
        EvidenceClaims(
            device_id="sim-open",
            nonce=b"n" * 32,
            issued_at=NOW.timestamp(),
            boot_epoch="boot-1",
            counter=1,
            measurements=Measurements(
                firmware="fw 1",
                control_software="qiskit",
                driver_build="sha256:" + "0" * 64,
                calibration_digest="c" * 64,
                num_qubits=5,
                two_qubit_error=None,
            ),
        ),
        device_key,
    )
    receipt = sign_receipt(
        ReceiptClaims(
            job_id="job-1",
            device_id="sim-open",
            circuit_digest=hashlib.sha256(CIRCUIT).hexdigest(),
            shots=1000,
            result_digest=result_digest(COUNTS),
            dispatch_nonce=b"d" * 32,
            evidence_digest=evidence.digest(),
            issued_at=NOW.timestamp(),
        ),
        device_key,
    )
    return ResultBundle(
        job_id="job-1",
        device_id="sim-open",
        circuit_digest=hashlib.sha256(CIRCUIT).hexdigest(),
        shots=1000,
        counts=COUNTS,
        receipt=receipt.to_json(),
        device_certificate_chain=chain,
        evidence=evidence.to_json(),
    )


@pytest.fixture(scope="module")
def world() -> tuple[bytes, SigningKey, ResultBundle]:
    ca_pem, device_key, chain = _facility()
    return ca_pem, device_key, _bundle(device_key, chain)


def test_untouched_bundle_verifies_and_shows_measurements(
    world: tuple[bytes, SigningKey, ResultBundle],
) -> None:
    ca_pem, _key, bundle = world
    again = ResultBundle.from_json(bundle.to_json())
    verdict = verify_bundle(again, ca_pem, circuit=CIRCUIT, now=NOW)
    assert verdict.problems == []
    assert verdict.measurements["firmware"] == "fw 1"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("job_id", "job-2"),
        ("device_id", "sim-other"),
        ("circuit_digest", "0" * 64),
        ("shots", 1001),
        ("counts", {"00": 511, "11": 489}),
        ("counts", {"00": 510, "11": 490, "01": 0}),
    ],
)
def test_altered_bundle_field_fails(
    world: tuple[bytes, SigningKey, ResultBundle], field: str, value: Any
) -> None:
    ca_pem, _key, bundle = world
    altered = dataclasses.replace(bundle, **{field: value})
    assert not verify_bundle(altered, ca_pem, now=NOW).valid


RECEIPT_CHANGES: dict[str, Any] = {
    "job_id": "job-9",
    "device_id": "sim-evil",
    "circuit_digest": "1" * 64,
    "shots": 999,
    "result_digest": "2" * 64,
    "dispatch_nonce": "ee" * 32,
    "evidence_digest": "3" * 64,
    "issued_at": 1.0,
}


@pytest.mark.parametrize("claim", sorted(RECEIPT_CHANGES))
def test_receipt_altered_in_any_claim_fails(
    world: tuple[bytes, SigningKey, ResultBundle], claim: str
) -> None:
    ca_pem, _key, bundle = world
    envelope = Envelope.from_json(bundle.receipt)
    body = json.loads(envelope.payload)
    assert claim in body, f"receipt claims changed shape: {sorted(body)}"
    body[claim] = RECEIPT_CHANGES[claim]
    forged = dataclasses.replace(
        envelope, payload=json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    )
    altered = dataclasses.replace(bundle, receipt=forged.to_json())
    verdict = verify_bundle(altered, ca_pem, now=NOW)
    assert any("signature" in p for p in verdict.problems), verdict.problems


def test_receipt_re_signed_by_another_key_fails(
    world: tuple[bytes, SigningKey, ResultBundle],
) -> None:
    ca_pem, _key, bundle = world
    envelope = Envelope.from_json(bundle.receipt)
    other = SigningKey.generate(KeyKind.ED25519)
    resigned = sign_receipt_payload(envelope, other)
    assert not verify_bundle(dataclasses.replace(bundle, receipt=resigned), ca_pem, now=NOW).valid


def sign_receipt_payload(envelope: Envelope, key: SigningKey) -> bytes:
    from attestation.dsse import sign_envelope

    return sign_envelope(envelope.payload_type, envelope.payload, key).to_json()


def test_chain_from_another_ca_fails(world: tuple[bytes, SigningKey, ResultBundle]) -> None:
    _ca, _key, bundle = world
    other_ca, _other_key, _chain = _facility()
    verdict = verify_bundle(bundle, other_ca, now=NOW)
    assert any("CERT_UNTRUSTED" in p for p in verdict.problems)


def test_evidence_altered_or_missing_fails(world: tuple[bytes, SigningKey, ResultBundle]) -> None:
    ca_pem, _key, bundle = world
    envelope = Envelope.from_json(bundle.evidence)
    body = json.loads(envelope.payload)
    body["counter"] = 2
    altered = dataclasses.replace(
        envelope, payload=json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    )
    verdict = verify_bundle(
        dataclasses.replace(bundle, evidence=altered.to_json()), ca_pem, now=NOW
    )
    assert "evidence is not the evidence the receipt names" in verdict.problems
    assert not verify_bundle(dataclasses.replace(bundle, evidence=b""), ca_pem, now=NOW).valid


def test_wrong_circuit_file_fails(world: tuple[bytes, SigningKey, ResultBundle]) -> None:
    ca_pem, _key, bundle = world
    verdict = verify_bundle(bundle, ca_pem, circuit=CIRCUIT + b"x q[1];\n", now=NOW)
    assert any("not the circuit" in p for p in verdict.problems)


EXECUTED = b'OPENQASM 3.0;\ninclude "stdgates.inc";\nbit[1] c;\nx $0;\nc[0] = measure $0;\n'


def _translated_bundle(device_key: SigningKey, bundle: ResultBundle) -> ResultBundle:
    claims = dataclasses.replace(
        decode_receipt(Envelope.from_json(bundle.receipt)),
        executed_circuit_digest=hashlib.sha256(EXECUTED).hexdigest(),
    )
    receipt = sign_receipt(claims, device_key).to_json()
    return dataclasses.replace(bundle, receipt=receipt, executed_circuit=EXECUTED)


def test_executed_circuit_survives_the_file_and_is_checked_against_the_receipt(
    world: tuple[bytes, SigningKey, ResultBundle],
) -> None:
    ca_pem, device_key, bundle = world
    translated = ResultBundle.from_json(_translated_bundle(device_key, bundle).to_json())
    assert translated.executed_circuit == EXECUTED
    assert verify_bundle(translated, ca_pem, now=NOW).problems == []
    altered = dataclasses.replace(translated, executed_circuit=EXECUTED.replace(b"x $0", b"id $0"))
    problems = verify_bundle(altered, ca_pem, now=NOW).problems
    assert problems == ["executed circuit does not match the digest the receipt names"]
    # A bundle saved before the field existed has none, and verifies as before.
    assert ResultBundle.from_json(bundle.to_json()).executed_circuit is None
