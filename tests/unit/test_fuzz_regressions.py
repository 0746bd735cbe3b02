"""Inputs the fuzz targets (fuzz/) found crashing a decoder, each kept as a regression test.

The oracle is the decoder's documented error: anything else escaping it is the bug."""

from __future__ import annotations

import struct

import pytest

from attestation._json import StrictJSONError, strict_loads
from attestation.audit_inclusion import (
    CHECKPOINT_PAYLOAD_TYPE,
    ExpectedCompletion,
    InclusionProof,
    ProofFormatError,
    decode_entry,
    verify_inclusion_proof,
)
from attestation.dsse import sign_envelope
from attestation.keys import SigningKey
from broker.errors import BrokerError, ErrorCode
from broker.grpc.codec.jobs import submit_from_proto
from qtestbed.receipt_bundle import ResultBundle
from qtestbed.v1 import jobs_pb2

_BUNDLE_HEAD = (
    b'{"format": "qtestbed.result-bundle.v1", "job_id": "j", "device_id": "d", '
    b'"circuit_digest": "c", '
)


@pytest.mark.parametrize(
    ("data", "says"),
    [
        # `Infinity` is JSON to Python's parser; int() of it raised OverflowError.
        (_BUNDLE_HEAD + b'"shots": Infinity, "counts": {}, "receipt": ""}', "malformed"),
        (_BUNDLE_HEAD + b'"shots": 1, "counts": {"00": -Infinity}, "receipt": ""}', "malformed"),
        # Nesting past the JSON parser's depth raised RecursionError.
        (b"[" * 5000, "nested too deeply"),
        (b'{"a":' * 3000, "nested too deeply"),
    ],
)
def test_result_bundle_reader_refuses_with_its_documented_error(data: bytes, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        ResultBundle.from_json(data.decode())


def test_submit_selector_refuses_a_nan_error_bound() -> None:
    """SubmitJobRequest{circuit{format: OPENQASM2}, selector{max_two_qubit_error: NaN}}: NaN
    compared false against both ends of [0, 1) and reached the domain as a bound."""
    nan = struct.pack("<d", float("nan"))
    selector = b"\x21" + nan  # field 4, fixed64
    data = b"\x12\x02\x08\x01" + b"\x3a" + bytes([len(selector)]) + selector
    request = jobs_pb2.SubmitJobRequest.FromString(data)
    with pytest.raises(BrokerError) as refused:
        submit_from_proto(request)
    assert refused.value.code is ErrorCode.INVALID_ARGUMENT
    assert "max_two_qubit_error" in str(refused.value)


# An audit leaf: seq 1, a zero prev_hash, then an event whose `at` overflows a float.
_OVERFLOWING_ENTRY = (
    b"\x00" * 7
    + b"\x01"
    + b"\x00" * 32
    + b'{"actor":"r","at":1e400,"detail":{},"kind":"job.completed","subject":"j"}'
)


def test_strict_json_refuses_numbers_that_overflow_to_infinity() -> None:
    with pytest.raises(StrictJSONError, match="out of range"):
        strict_loads(b'{"at": 9991e40099}')
    assert strict_loads(b"[1e308, -2.5e-400]") == [1e308, -0.0]


def test_audit_entry_with_an_overflowing_number_is_a_proof_format_error() -> None:
    """It parsed to inf, and re-encoding it to check canonical form raised a bare ValueError."""
    with pytest.raises(ProofFormatError, match="out of range"):
        decode_entry(_OVERFLOWING_ENTRY)


def test_checkpoint_with_an_overflowing_number_is_reported_not_raised() -> None:
    key = SigningKey.generate()
    payload = b'{"at":1e400,"root_hash":"' + b"0" * 64 + b'","tree_size":1}'
    checkpoint = sign_envelope(CHECKPOINT_PAYLOAD_TYPE, payload, key).to_json()
    proof = InclusionProof(
        entry=_OVERFLOWING_ENTRY, leaf_index=0, tree_size=1, audit_path=(), checkpoint=checkpoint
    )
    expected = ExpectedCompletion(job_id="j", device_id="d", shots=1, counts={"0": 1})
    problems = verify_inclusion_proof(proof, key.public_key, expected)
    assert any("checkpoint payload" in p and "out of range" in p for p in problems), problems
    assert any("audit entry unreadable" in p for p in problems), problems
