"""Admission at the gRPC edge: a per-principal cap on open streams and a server-wide limit on
concurrent calls, so one principal holding many WatchJob streams (or a flood of calls) cannot
take the broker from everyone else.

A refusal is RESOURCE_EXHAUSTED with a retry delay (in words in the detail, and as a standard
google.rpc.RetryInfo status detail, like every limit that lifts by itself), counted by reason
at once and audited in aggregate (one `edge.call_limit` entry per reason and principal per
window), since a flood can multiply it."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator

from broker.access.open_streams import OpenStreams, StreamCheck, StreamTicket
from broker.audit.log import AuditLog
from broker.audit.refusals import RefusalLog
from broker.clock import Clock
from broker.errors import BrokerError, resource_exhausted
from broker.metrics import BrokerMetrics
from broker.settings import CallLimitSettings

log = logging.getLogger(__name__)


class CallLimits:
    def __init__(
        self,
        settings: CallLimitSettings,
        *,
        streams: OpenStreams,
        metrics: BrokerMetrics,
        audit: AuditLog,
        clock: Clock,
        window_seconds: float = 60.0,
    ) -> None:
        self._settings = settings
        self._streams = streams
        self._metrics = metrics
        self._in_flight = 0
        logs = functools.partial(
            RefusalLog, audit=audit, clock=clock, logger=log, window_seconds=window_seconds
        )
        self._log = logs(kind="edge.call_limit", what="calls over the edge's call limits")
        self._ended = logs(kind="edge.stream_ended", what="open streams ended by an access change")

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @contextlib.contextmanager
    def call(self, principal: str) -> Iterator[None]:
        """Hold one of the server's concurrent-call places for the call's length."""
        if self._in_flight >= self._settings.max_concurrent_rpcs:
            self._metrics.concurrent_rpc_refusals.inc()
            self._log.tally("concurrent_rpcs", principal)
            raise self._refusal(
                f"the broker is serving its limit of {self._settings.max_concurrent_rpcs} "
                "concurrent calls",
                "calls.concurrent_rpcs",
            )
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1

    def open_stream(self, principal: str, serial: str, *checks: StreamCheck) -> StreamTicket:
        """A ticket for a new stream, or RESOURCE_EXHAUSTED when the principal is at its cap
        (close it with `OpenStreams.close`)."""
        cap = self._settings.streams_per_principal
        if self._streams.count_of(principal) >= cap:
            self._metrics.stream_refusals.labels("principal_cap").inc()
            self._log.tally("principal_cap", principal)
            raise self._refusal(
                f"principal {principal} already holds its limit of {cap} open streams; close "
                "one (or let a watched job finish)",
                "calls.stream_cap",
            )
        return self._streams.open(serial, principal, *checks)

    def stream_ended(self, reason: str, principal: str) -> None:
        """Count and (in aggregate) audit a stream an access change ended."""
        self._metrics.streams_ended.labels(reason).inc()
        self._ended.tally(reason, principal)

    def _refusal(self, what: str, rule_id: str) -> BrokerError:
        return resource_exhausted(what, self._settings.retry_after_seconds, rule_id=rule_id)

    async def flush(self, *, force: bool = False) -> None:
        """Audit the window's refusals once it has run its length (on the tick; at shutdown
        with `force`)."""
        await self._log.flush(force=force)
        await self._ended.flush(force=force)
