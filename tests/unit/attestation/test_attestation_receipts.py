from __future__ import annotations

import dataclasses
import hashlib

import pytest

from attestation.dsse import Envelope, sign_envelope
from attestation.evidence import EVIDENCE_PAYLOAD_TYPE
from attestation.keys import SigningKey
from attestation.receipts import (
    RECEIPT_PAYLOAD_TYPE,
    ReceiptClaims,
    ReceiptError,
    decode_receipt,
    encode_receipt,
    result_digest,
    sign_receipt,
    verify_receipt,
)

COUNTS = {"11": 510, "00": 514}
NONCE = b"\x07" * 32
CLAIMS = ReceiptClaims(
    job_id="job-1",
    device_id="qpu-1",
    circuit_digest="a" * 64,
    shots=1024,
    result_digest=result_digest(COUNTS),
    dispatch_nonce=NONCE,
    evidence_digest="e" * 64,
    issued_at=1_700_000_000.5,
)


def _verify(receipt: bytes, key: SigningKey, **overrides: object) -> list[str]:
    expected: dict[str, object] = {
        "job_id": "job-1",
        "circuit_digest": "a" * 64,
        "shots": 1024,
        "counts": COUNTS,
        "dispatch_nonce": NONCE,
    }
    return verify_receipt(receipt, key.public_key, **{**expected, **overrides})  # type: ignore[arg-type]


def test_result_digest_is_canonical_sha256() -> None:
    assert result_digest({"11": 5, "00": 3}) == hashlib.sha256(b'{"00":3,"11":5}').hexdigest()
    assert result_digest({"00": 3, "11": 5}) == result_digest({"11": 5, "00": 3})
    assert result_digest({"00": 3, "11": 5}) != result_digest({"00": 5, "11": 3})


@pytest.mark.parametrize("counts", [{"00": -1}, {"00": 1.5}, {"00": True}, {0: 1}])
def test_result_digest_refuses_non_counts(counts: dict[object, object]) -> None:
    with pytest.raises(ValueError, match="counts"):
        result_digest(counts)  # type: ignore[arg-type]


def test_round_trip_and_valid_receipt(device_key: SigningKey) -> None:
    envelope = sign_receipt(CLAIMS, device_key)
    assert envelope.payload_type == RECEIPT_PAYLOAD_TYPE
    data = envelope.to_json()
    assert decode_receipt(Envelope.from_json(data)) == CLAIMS
    assert _verify(data, device_key) == []


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ({"job_id": "job-2"}, "receipt is for job 'job-1', expected 'job-2'"),
        ({"circuit_digest": "b" * 64}, "circuit digest"),
        ({"shots": 1000}, "says 1024 shots, expected 1000"),
        ({"counts": {"11": 511, "00": 513}}, "result digest does not match"),
        ({"dispatch_nonce": b"\x08" * 32}, "dispatch nonce"),
    ],
)
def test_each_mismatch_is_reported(
    device_key: SigningKey, override: dict[str, object], fragment: str
) -> None:
    problems = _verify(sign_receipt(CLAIMS, device_key).to_json(), device_key, **override)
    assert len(problems) == 1
    assert fragment in problems[0]


def test_unknown_dispatch_nonce_is_skipped_for_offline_checks(device_key: SigningKey) -> None:
    other_nonce = dataclasses.replace(CLAIMS, dispatch_nonce=b"\x09" * 32)
    receipt = sign_receipt(other_nonce, device_key).to_json()
    assert _verify(receipt, device_key, dispatch_nonce=None) == []
    assert _verify(receipt, device_key) != []


def test_wrong_key_is_a_signature_problem(device_key: SigningKey, other_key: SigningKey) -> None:
    problems = _verify(sign_receipt(CLAIMS, other_key).to_json(), device_key)
    assert problems == [
        f"receipt signature does not verify with key {device_key.public_key.key_id}"
    ]


def test_tampered_receipt_reports_signature_and_field(device_key: SigningKey) -> None:
    envelope = sign_receipt(CLAIMS, device_key)
    forged_claims = dataclasses.replace(CLAIMS, shots=2048)
    forged = dataclasses.replace(envelope, payload=encode_receipt(forged_claims))
    problems = _verify(forged.to_json(), device_key)
    assert len(problems) == 2
    assert "signature does not verify" in problems[0]
    assert "2048 shots" in problems[1]


def test_unparseable_receipt_is_one_problem(device_key: SigningKey) -> None:
    problems = _verify(b"{", device_key)
    assert len(problems) == 1
    assert problems[0].startswith("receipt is not a DSSE envelope")


def test_evidence_cannot_pass_as_a_receipt(device_key: SigningKey) -> None:
    confused = sign_envelope(EVIDENCE_PAYLOAD_TYPE, encode_receipt(CLAIMS), device_key)
    with pytest.raises(ReceiptError, match="payload type"):
        decode_receipt(confused)
    problems = _verify(confused.to_json(), device_key)
    assert len(problems) == 1
    assert "payload type" in problems[0]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"[]", "expected a JSON object"),
        (encode_receipt(CLAIMS).replace(b'"shots":1024', b'"shots":0'), "'shots'"),
        (encode_receipt(CLAIMS).replace(b'"job_id":"job-1",', b""), "missing field 'job_id'"),
        (encode_receipt(CLAIMS).replace(NONCE.hex().encode(), b"zz"), "'dispatch_nonce'"),
    ],
)
def test_decode_names_the_bad_field(device_key: SigningKey, payload: bytes, message: str) -> None:
    with pytest.raises(ReceiptError, match=message):
        decode_receipt(sign_envelope(RECEIPT_PAYLOAD_TYPE, payload, device_key))


EXECUTED = b'OPENQASM 3.0;\ninclude "stdgates.inc";\nbit[2] c;\ncx $0, $1;\n'
TRANSLATED = dataclasses.replace(
    CLAIMS, executed_circuit_digest=hashlib.sha256(EXECUTED).hexdigest()
)
AS_SENT = dataclasses.replace(CLAIMS, executed_circuit_digest="a" * 64)


def test_executed_circuit_digest_round_trips_and_old_receipts_still_decode(
    device_key: SigningKey,
) -> None:
    for claims in (TRANSLATED, AS_SENT, CLAIMS):
        data = sign_receipt(claims, device_key).to_json()
        assert decode_receipt(Envelope.from_json(data)) == claims
    assert b"executed_circuit_digest" not in encode_receipt(CLAIMS)  # the old form, unchanged


@pytest.mark.parametrize(
    ("claims", "executed", "fragment"),
    [
        (TRANSLATED, EXECUTED + b"x $0;\n", "does not match the digest the receipt names"),
        (TRANSLATED, b"", "ran a translated circuit, but the result has none"),
        (AS_SENT, EXECUTED, "does not match the digest"),
        (CLAIMS, EXECUTED, "receipt does not name one"),
    ],
    ids=["altered", "dropped", "added-to-as-sent", "added-to-old-receipt"],
)
def test_executed_circuit_that_is_not_the_one_signed_fails(
    device_key: SigningKey, claims: ReceiptClaims, executed: bytes, fragment: str
) -> None:
    receipt = sign_receipt(claims, device_key).to_json()
    problems = _verify(receipt, device_key, executed_circuit=executed)
    assert any(fragment in p for p in problems), problems


@pytest.mark.parametrize(
    ("claims", "executed"), [(TRANSLATED, EXECUTED), (AS_SENT, b""), (CLAIMS, b""), (CLAIMS, None)]
)
def test_executed_circuit_that_is_the_one_signed_verifies(
    device_key: SigningKey, claims: ReceiptClaims, executed: bytes | None
) -> None:
    receipt = sign_receipt(claims, device_key).to_json()
    assert _verify(receipt, device_key, executed_circuit=executed) == []
