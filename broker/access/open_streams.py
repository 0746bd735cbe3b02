"""Open server streams (WatchJob, StreamAudit) by the credential that opened them, so that a
revocation ends them: a revoked credential must not keep a stream open."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(eq=False, slots=True)
class StreamTicket:
    """Set when the stream's credential is revoked; the edge then ends the stream."""

    serial: str
    principal: str = ""
    revoked: asyncio.Event = field(default_factory=asyncio.Event)


class OpenStreams:
    def __init__(self) -> None:
        self._open: dict[str, set[StreamTicket]] = {}
        self._by_principal: dict[str, int] = {}  # open streams per principal (the cap's count)

    def open(self, serial: str, principal: str = "") -> StreamTicket:
        ticket = StreamTicket(serial=serial, principal=principal)
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
                if not ticket.revoked.is_set():
                    ticket.revoked.set()
                    ended += 1
        return ended

    def __len__(self) -> int:
        return sum(len(t) for t in self._open.values())
