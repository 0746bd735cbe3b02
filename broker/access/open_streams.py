"""Open server streams (WatchJob, StreamAudit) by the credential that opened them, so that an
access change ends them: a revoked credential, a removed principal, a role or grant that went,
or anything else that would refuse a new call must not keep a stream open.

Each stream carries the checks a new call would pass (`StreamTicket.checks`); `recheck` runs
them after every access change (here or, through the store's fingerprint, on another replica)
and on the broker's tick (a grant expires without any record changing), and ends each stream
that no longer passes with the answer a new call would get."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field

from broker.errors import BrokerError, ErrorCode


@dataclass(frozen=True, slots=True)
class StreamEnding:
    """Why a stream ends: the reason it is counted under and the caller's answer."""

    reason: str
    error: BrokerError


# A check returns None while the stream may stay open.
StreamCheck = Callable[[], StreamEnding | None]


@dataclass(frozen=True, slots=True)
class SharedCheck:
    """A check whose answer depends only on `key`, the same for every stream one credential
    opened on one method: asked once per recheck for all of them (1,500 streams of one
    principal cost the tick one check, not 1,500)."""

    key: Hashable
    run: Callable[[], StreamEnding | None]

    def __call__(self) -> StreamEnding | None:
        return self.run()


REVOKED = StreamEnding(
    "revoked",
    BrokerError(
        ErrorCode.UNAUTHENTICATED,
        "this credential was revoked while the stream was open; the stream ends",
    ),
)


@dataclass(eq=False, slots=True)
class StreamTicket:
    """Set (`ended`, with `why`) when the stream must end; the edge then ends it."""

    serial: str
    principal: str = ""
    checks: list[StreamCheck] = field(default_factory=list)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    why: StreamEnding | None = None

    def end(self, why: StreamEnding) -> bool:
        """End the stream with `why`; False if it was already ended."""
        if self.ended.is_set():
            return False
        self.why = why
        self.ended.set()
        return True

    def failing(self, answers: dict[Hashable, StreamEnding | None]) -> StreamEnding | None:
        """The first check this stream fails; `answers` keeps shared checks' answers for the
        other streams of one recheck."""
        for check in self.checks:
            if isinstance(check, SharedCheck):
                if check.key not in answers:
                    answers[check.key] = check()
                found = answers[check.key]
            else:
                found = check()
            if found is not None:
                return found
        return None


# The ticket of the stream being served, so a service can add a check of its own (WatchJob:
# the job is still the caller's to see).
CURRENT_STREAM: contextvars.ContextVar[StreamTicket | None] = contextvars.ContextVar(
    "qtestbed_current_stream", default=None
)


def add_stream_check(check: StreamCheck) -> None:
    """Hold the stream being served to `check` too, from now on (no-op outside a stream)."""
    ticket = CURRENT_STREAM.get()
    if ticket is not None:
        ticket.checks.append(check)


def _ignore(reason: str, principal: str) -> None:
    return None


class OpenStreams:
    def __init__(self, on_end: Callable[[str, str], None] = _ignore) -> None:
        """`on_end(reason, principal)` is told of each stream ended (to count and audit it)."""
        self._open: dict[str, set[StreamTicket]] = {}
        self._by_principal: dict[str, int] = {}  # open streams per principal (the cap's count)
        self._on_end = on_end

    def open(self, serial: str, principal: str = "", *checks: StreamCheck) -> StreamTicket:
        ticket = StreamTicket(serial=serial, principal=principal, checks=list(checks))
        self._open.setdefault(serial, set()).add(ticket)
        self._by_principal[principal] = self._by_principal.get(principal, 0) + 1
        return ticket

    def count_of(self, principal: str) -> int:
        return self._by_principal.get(principal, 0)

    def close(self, ticket: StreamTicket) -> None:
        tickets = self._open.get(ticket.serial)
        if tickets is None or ticket not in tickets:
            return
        tickets.discard(ticket)
        if not tickets:
            del self._open[ticket.serial]
        left = self._by_principal[ticket.principal] - 1
        if left:
            self._by_principal[ticket.principal] = left
        else:
            del self._by_principal[ticket.principal]

    def end(self, revoked: Iterable[str]) -> int:
        """End every open stream of these serials; how many were ended."""
        ended = 0
        for serial in set(revoked) & set(self._open):
            for ticket in self._open[serial]:
                ended += self._end(ticket, REVOKED)
        return ended

    def recheck(self) -> int:
        """End every open stream a new call would now be refused; how many were ended."""
        ended = 0
        answers: dict[Hashable, StreamEnding | None] = {}
        for tickets in list(self._open.values()):
            for ticket in list(tickets):
                if ticket.ended.is_set():
                    continue
                why = ticket.failing(answers)
                if why is not None:
                    ended += self._end(ticket, why)
        return ended

    def _end(self, ticket: StreamTicket, why: StreamEnding) -> int:
        if not ticket.end(why):
            return 0
        self._on_end(why.reason, ticket.principal)
        return 1

    def __len__(self) -> int:
        return sum(len(t) for t in self._open.values())
