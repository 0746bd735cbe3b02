"""A limit that lifts by itself travels as RESOURCE_EXHAUSTED with a standard google.rpc.RetryInfo:
the broker's encoding is what grpc_status and the project's client read, and the CLI prints it."""

from __future__ import annotations

import argparse

import grpc
from google.rpc import code_pb2, error_details_pb2

from broker.errors import ErrorCode, resource_exhausted
from broker.grpc.status import retry_status
from qtestbed.cli.errors import refusal
from qtestbed.client import QtestbedError, _retry_delay


def test_resource_exhausted_names_the_delay_and_carries_it_as_retry_info() -> None:
    error = resource_exhausted("stream cap for 'alice' reached", 2.5, rule_id="streams.cap")
    assert error.code is ErrorCode.RESOURCE_EXHAUSTED
    assert error.detail == "stream cap for 'alice' reached; retry in 2.5 s"
    assert error.rule_id == "streams.cap"
    status = retry_status(error)
    assert status.code == code_pb2.RESOURCE_EXHAUSTED == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert status.message == error.detail  # grpc_status.from_call requires both to match
    [detail] = status.details
    info = error_details_pb2.RetryInfo()
    assert detail.Unpack(info)
    assert info.retry_delay.ToNanoseconds() == 2_500_000_000
    assert _retry_delay(status.SerializeToString()) == 2.5


def test_a_delay_is_never_zero_and_garbage_details_give_none() -> None:
    assert resource_exhausted("x", 0.0).retry_after_seconds == 0.001
    assert _retry_delay(b"\xff\xff not a status") is None


def test_the_cli_prints_the_retry_delay() -> None:
    error = QtestbedError(
        "RESOURCE_EXHAUSTED", "submission rate limit", "admission.principal_rate", 0.25
    )
    printed = refusal(error, {}, argparse.Namespace())
    assert printed == (
        "RESOURCE_EXHAUSTED: submission rate limit [rule admission.principal_rate] "
        "[retry after 0.25 s]"
    )
