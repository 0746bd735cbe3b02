"""Refusals on the driver link, counted by reason at once and audited in aggregate: one
`link.refused` entry per reason and device per window, with the count, so a flood of garbage
frames or Hellos cannot flood the audit log or the broker's own log.

The socket's own refusals (an unknown key at the handshake, a malformed frame) arrive in bulk
from `LinkPort.take_refusals`; the hub, admission and lease keeper report theirs one by one.
Nothing here logs a routing id: a connection is named by its device (the key's authorisation).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping

from broker.audit.log import AuditLog
from broker.audit.refusals import RefusalLog
from broker.clock import Clock
from broker.metrics import BrokerMetrics

log = logging.getLogger(__name__)


class LinkRefusal(enum.Enum):
    """Why the link refused something; the value is the metric's `reason` label."""

    UNKNOWN_KEY = "unknown_key"  # a CurveZMQ key no authorisation names (handshake refused)
    MALFORMED_FRAME = "malformed_frame"  # not one LinkMessage frame for the broker
    WRONG_KEY = "wrong_key"  # a Hello for a device the key is not authorised for
    ROUTE_TAKEN = "route_taken"  # a key using a routing id another key's connection holds
    HELLO_RATE = "hello_rate"  # a key saying Hello faster than its allowance
    TOO_MANY_CONNECTIONS = "too_many_connections"  # a key past its connection limit
    HELLO_WITHOUT_GRANT_KEY = "hello_without_grant_key"  # no usable X25519 key to seal grants to
    HELLO_FIRST = "hello_first"  # a message on a connection that never said Hello
    LEASE_NOT_HELD = "lease_not_held"  # a lease message for a lease the connection lacks
    DUPLICATE_RESULT = "duplicate_result"  # a second result for a lease already answered
    WRONG_JOB = "wrong_job"  # the connection's own lease, but another job's id
    LEASE_WITHDRAWN = "lease_withdrawn"  # a start or result for a lease the broker took back


_KNOWN = {r.value for r in LinkRefusal}


class LinkDoor:
    def __init__(
        self,
        *,
        audit: AuditLog,
        metrics: BrokerMetrics,
        clock: Clock,
        window_seconds: float = 60.0,
    ) -> None:
        self._metrics = metrics
        self._log = RefusalLog(
            kind="link.refused",
            what="driver-link handshakes or messages",
            audit=audit,
            clock=clock,
            logger=log,
            window_seconds=window_seconds,
        )

    def refused(self, reason: LinkRefusal, device_id: str = "", count: int = 1) -> None:
        """Count refusals (cheap, never blocks); `device_id` is the device the sender's link
        key is authorised for, "" when no key was proved."""
        self._metrics.link_refusals.labels(reason.value).inc(count)
        self._log.tally(reason.value, device_id, count)

    def socket_refusals(self, taken: Mapping[str, int]) -> None:
        """What the socket refused since it was last asked (see `LinkPort.take_refusals`)."""
        for reason, count in taken.items():
            if reason in _KNOWN and count > 0:
                self.refused(LinkRefusal(reason), "", count)

    async def flush(self, *, force: bool = False) -> None:
        await self._log.flush(force=force)
