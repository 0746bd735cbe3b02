"""The one error catalog: domain error codes, what each means to a caller, and the errors the
broker raises for conditions that are not the caller's fault. `broker.grpc.status` maps each
code to one gRPC status."""

from __future__ import annotations

import enum


class ErrorCode(enum.Enum):
    """What went wrong, in domain terms; the edge maps each to one gRPC status."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"  # the request itself is malformed or out of limits
    UNAUTHENTICATED = "UNAUTHENTICATED"  # no or unknown caller identity
    PERMISSION_DENIED = "PERMISSION_DENIED"  # the caller is known but a rule says no
    NOT_FOUND = "NOT_FOUND"  # no such job/device, or one the caller may not see
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"  # quota or rate limit reached
    FAILED_PRECONDITION = "FAILED_PRECONDITION"  # valid request, wrong moment (e.g. no result yet)
    ABORTED = "ABORTED"  # a compare-and-set lost to a concurrent change: read again and retry
    UNAVAILABLE = "UNAVAILABLE"  # try again later (store down, shutting down)


class BrokerError(Exception):
    """An error meant for the caller: `detail` is safe to show and says what to do next.

    `retry_after_seconds`, when set, is how long the caller should wait before retrying (a
    share or rate limit reached); `resource_exhausted` makes such an error."""

    def __init__(
        self,
        code: ErrorCode,
        detail: str,
        *,
        rule_id: str = "",
        retry_after_seconds: float | None = None,
    ) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.rule_id = rule_id
        # When set, the edge sends it as a standard google.rpc.RetryInfo status detail.
        self.retry_after_seconds = retry_after_seconds


def not_found(kind: str, ident: str) -> BrokerError:
    """The same answer for 'does not exist' and 'exists but hidden from you'."""
    return BrokerError(ErrorCode.NOT_FOUND, f"{kind} {ident!r} not found")


def invalid(detail: str) -> BrokerError:
    """The request itself is wrong; `detail` says what and how to put it right."""
    return BrokerError(ErrorCode.INVALID_ARGUMENT, detail)


def resource_exhausted(
    message: str, retry_after_seconds: float, *, rule_id: str = ""
) -> BrokerError:
    """A limit was reached and lifts by itself: RESOURCE_EXHAUSTED carrying the delay after which
    a retry can succeed (as google.rpc.RetryInfo in the status details, for any gRPC client),
    and the same advice in words. `message` names the limit; the advice is appended here."""
    delay = max(retry_after_seconds, 0.001)
    return BrokerError(
        ErrorCode.RESOURCE_EXHAUSTED,
        f"{message}; retry in {delay:.3g} s",
        rule_id=rule_id,
        retry_after_seconds=delay,
    )


# How long a caller refused during a store outage is told to wait: long enough not to hammer a
# database that is restarting, short enough that a brief outage costs a caller little.
STORE_RETRY_SECONDS = 2.0


def store_unavailable() -> BrokerError:
    """The store could not be reached or failed mid-call. Nothing was acknowledged, so a retry
    is safe (submissions carry an idempotency key); the database's own words stay in the log.
    The retry delay travels as google.rpc.RetryInfo, like a rate limit's."""
    return BrokerError(
        ErrorCode.UNAVAILABLE,
        "the broker's database is not answering; nothing was changed, try again in a few "
        "seconds (a retried submission with the same idempotency key is queued once)",
        retry_after_seconds=STORE_RETRY_SECONDS,
    )
