"""Domain errors to gRPC statuses, in one table, applied in one place (the interceptor).

A refusal's rule id, and the retry delay of one refused for now, travel in trailing metadata;
anything unexpected becomes INTERNAL with a reference to the log, never its text.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from broker.errors import BrokerError, ErrorCode, store_unavailable
from broker.metrics import BrokerMetrics
from broker.store import StoreError
from qtestbed.shared.wire import RULE_ID_METADATA, STATUS_DETAILS_METADATA

log = logging.getLogger(__name__)

STATUS_FOR: dict[ErrorCode, grpc.StatusCode] = {
    ErrorCode.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorCode.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    ErrorCode.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorCode.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorCode.ABORTED: grpc.StatusCode.ABORTED,
    ErrorCode.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
}


def as_broker_error(exc: BaseException) -> BrokerError | None:
    """The caller-facing error for `exc`, or None when it is a bug (INTERNAL)."""
    if isinstance(exc, BrokerError):
        return exc
    if isinstance(exc, StoreError):
        # Logged once per outage by the store's health (broker.store.health), not per call.
        log.debug("store unavailable: %s", exc)
        return store_unavailable()
    return None


async def abort(
    context: grpc.aio.ServicerContext[Any, Any],
    exc: Exception,
    metrics: BrokerMetrics,
) -> None:
    """End the call with the status the catalog gives `exc` (this raises AbortError); a call
    refused because the store is away is counted on `metrics`."""
    error = as_broker_error(exc)
    if isinstance(exc, StoreError):
        metrics.unavailable_refusals.labels("store_unavailable").inc()
    if error is not None:
        trailers: list[tuple[str, str | bytes]] = []
        if error.rule_id:
            trailers.append((RULE_ID_METADATA, error.rule_id))
        if error.retry_after_seconds is not None:
            trailers.append((STATUS_DETAILS_METADATA, retry_status(error).SerializeToString()))
        if trailers:
            context.set_trailing_metadata(tuple(trailers))
        await context.abort(STATUS_FOR[error.code], error.detail)
    ref = uuid.uuid4().hex[:12]
    log.error("internal error (ref %s)", ref, exc_info=exc)
    await context.abort(
        grpc.StatusCode.INTERNAL, f"internal error; the broker logged the details under ref {ref}"
    )


def retry_status(error: BrokerError) -> status_pb2.Status:
    """The google.rpc.Status for `error` with its retry delay as a RetryInfo detail."""
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(round((error.retry_after_seconds or 0.0) * 1e9))
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    code = getattr(code_pb2, STATUS_FOR[error.code].name)
    return status_pb2.Status(code=code, message=error.detail, details=[detail])
