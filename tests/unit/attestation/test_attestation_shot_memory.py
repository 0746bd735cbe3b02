"""Per-shot memory: its packing, its digest, its bound, and the receipt that binds it."""

from __future__ import annotations

import dataclasses
import random

import pytest

from attestation.keys import SigningKey
from attestation.receipts import (
    ReceiptClaims,
    decode_receipt,
    result_digest,
    sign_receipt,
    verify_receipt,
)
from attestation.shot_memory import MAX_MEMORY_BITS, ShotMemory, ShotMemoryError, check_size

SHOTS = ["101", "000", "111", "101", "010", "000"]
MEMORY = ShotMemory.from_bitstrings(SHOTS, 3)
COUNTS = MEMORY.histogram()
NONCE = b"\x07" * 32


def claims(memory: ShotMemory | None) -> ReceiptClaims:
    return ReceiptClaims(
        job_id="job-1",
        device_id="qpu-1",
        circuit_digest="a" * 64,
        shots=len(SHOTS),
        result_digest=result_digest(COUNTS),
        dispatch_nonce=NONCE,
        evidence_digest="e" * 64,
        issued_at=1_700_000_000.5,
        memory_digest=memory.digest() if memory is not None else "",
    )


def verify(receipt: bytes, key: SigningKey, memory: ShotMemory | None) -> list[str]:
    return verify_receipt(
        receipt,
        key.public_key,
        job_id="job-1",
        circuit_digest="a" * 64,
        shots=len(SHOTS),
        counts=COUNTS,
        dispatch_nonce=NONCE,
        memory=memory,
    )


def test_bitstrings_round_trip_in_shot_order() -> None:
    assert MEMORY.bitstrings() == SHOTS
    assert MEMORY.values() == [5, 0, 7, 5, 2, 0]
    assert MEMORY.shots == 6
    assert COUNTS == {"101": 2, "000": 2, "111": 1, "010": 1}
    wide = [format(random.Random(3).getrandbits(11), "011b") for _ in range(50)]
    assert ShotMemory.from_bitstrings(wide, 11).bitstrings() == wide
    assert len(ShotMemory.from_bitstrings(wide, 11).packed) == 100  # two bytes a shot
    spaced = ShotMemory.from_bitstrings(["1 01", "0 00"], 3)  # Qiskit's register spaces
    assert spaced.bitstrings() == ["101", "000"]


def test_digest_covers_every_byte_the_order_and_the_width() -> None:
    swapped = ShotMemory.from_bitstrings([SHOTS[1], SHOTS[0], *SHOTS[2:]], 3)
    assert swapped.histogram() == COUNTS
    assert swapped.digest() != MEMORY.digest()
    for i in range(len(MEMORY.packed)):
        altered = bytearray(MEMORY.packed)
        altered[i] ^= 0x01
        assert ShotMemory(3, bytes(altered)).digest() != MEMORY.digest()
    assert ShotMemory(4, MEMORY.packed).digest() != MEMORY.digest()


@pytest.mark.parametrize(
    ("width", "packed", "words"),
    [(0, b"", "at least one"), (9, b"\x00\x01\x02", "whole number"), (3, b"\x08", "beyond")],
)
def test_malformed_memory_is_refused(width: int, packed: bytes, words: str) -> None:
    with pytest.raises(ShotMemoryError, match=words):
        ShotMemory(width, packed).values()


def test_memory_is_bounded() -> None:
    check_size(MAX_MEMORY_BITS // 4, 4)
    with pytest.raises(ShotMemoryError, match="exceeds the limit"):
        check_size(MAX_MEMORY_BITS // 4 + 1, 4)
    with pytest.raises(ShotMemoryError, match="not a 3-bit outcome"):
        ShotMemory.from_bitstrings(["0101"], 3)


def test_a_receipt_binds_memory_and_counts_must_be_its_histogram(device_key: SigningKey) -> None:
    receipt = sign_receipt(claims(MEMORY), device_key).to_json()
    assert decode_receipt(sign_receipt(claims(MEMORY), device_key)).memory_digest
    assert verify(receipt, device_key, MEMORY) == []
    swapped = ShotMemory.from_bitstrings([SHOTS[1], SHOTS[0], *SHOTS[2:]], 3)
    assert verify(receipt, device_key, swapped) == [
        "receipt memory digest does not match the per-shot memory"
    ]
    flipped = ShotMemory.from_bitstrings(["100", *SHOTS[1:]], 3)
    problems = verify(receipt, device_key, flipped)
    assert "receipt memory digest does not match the per-shot memory" in problems
    assert "the counts are not the histogram of the per-shot memory" in problems
    assert verify(receipt, device_key, None) == [
        "receipt binds per-shot memory but the result carries none"
    ]


def test_memory_the_receipt_does_not_bind_is_refused(device_key: SigningKey) -> None:
    plain = sign_receipt(claims(None), device_key)
    assert decode_receipt(plain).memory_digest == ""
    assert "memory_digest" not in plain.payload.decode()  # older receipts read the same
    assert verify(plain.to_json(), device_key, None) == []
    assert verify(plain.to_json(), device_key, MEMORY) == [
        "the result carries per-shot memory the receipt does not bind"
    ]


def test_counts_that_disagree_with_signed_memory_are_refused(device_key: SigningKey) -> None:
    # A device that signs counts and memory that do not agree is caught by the verifier.
    lying = dataclasses.replace(claims(MEMORY), result_digest=result_digest({"101": 6}))
    receipt = sign_receipt(lying, device_key).to_json()
    problems = verify_receipt(
        receipt,
        device_key.public_key,
        job_id="job-1",
        circuit_digest="a" * 64,
        shots=6,
        counts={"101": 6},
        dispatch_nonce=NONCE,
        memory=MEMORY,
    )
    assert problems == ["the counts are not the histogram of the per-shot memory"]
