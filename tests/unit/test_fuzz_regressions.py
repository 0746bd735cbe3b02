"""Inputs the fuzz targets (fuzz/) found crashing a decoder, each kept as a regression test.

The oracle is the decoder's documented error: anything else escaping it is the bug."""

from __future__ import annotations

import pytest

from qtestbed.receipt_bundle import ResultBundle

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
