"""SubmitJob / SubmitJobs request decoding: raw bytes -> protobuf parse -> domain SubmitRequest,
as grpc's deserializer and `broker.grpc.codec.jobs.submit_from_proto` do it.

Documented failures: protobuf `DecodeError` (grpc answers INTERNAL before the servicer runs) and
`BrokerError` (INVALID_ARGUMENT with a message)."""

from __future__ import annotations

from google.protobuf.message import DecodeError

from broker.errors import BrokerError
from broker.grpc.codec.jobs import submit_from_proto
from broker.jobs.submit import SubmitRequest
from qtestbed.v1 import jobs_pb2

EXPECTED: tuple[type[BaseException], ...] = (DecodeError, BrokerError)


def one_input(data: bytes) -> None:
    try:
        single = jobs_pb2.SubmitJobRequest.FromString(data)
        _check(submit_from_proto(single))
    except EXPECTED:
        pass
    try:
        batch = jobs_pb2.SubmitJobsRequest.FromString(data)
        for request in batch.jobs:
            _check(submit_from_proto(request))
    except EXPECTED:
        pass


def _check(request: SubmitRequest) -> None:
    """What the codec promises the domain: plain types, the key bounded, the selector's error
    bound in [0, 1)."""
    assert isinstance(request.payload, bytes)
    assert request.idempotency_key is None or len(request.idempotency_key) <= 128
    if request.selector is not None:
        assert 0 <= request.selector.max_two_qubit_error < 1, request.selector
