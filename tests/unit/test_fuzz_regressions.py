"""Inputs the fuzz targets (fuzz/) found crashing a decoder, each kept as a regression test.

The oracle is the decoder's documented error: anything else escaping it is the bug."""

from __future__ import annotations

import struct

import pytest

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
