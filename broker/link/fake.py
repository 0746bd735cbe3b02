"""An in-memory driver link for unit tests of the hub, attestor and dispatcher (no sockets).

A test plays the drivers: `deliver()` queues what a driver says, `sent_to()` reads what the
broker said to a connection, `drop()` makes a connection unreachable the way a vanished
ZeroMQ peer is.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

from broker.link.messages import Inbound, Outbound


class FakeLink:
    """Implements `broker.link.port.LinkPort`."""

    def __init__(self) -> None:
        self._inbox: asyncio.Queue[tuple[bytes, Inbound]] = asyncio.Queue()
        self._sent: defaultdict[bytes, list[Outbound]] = defaultdict(list)
        self._gone: set[bytes] = set()

    async def recv(self) -> tuple[bytes, Inbound]:
        return await self._inbox.get()

    async def send(self, identity: bytes, message: Outbound) -> bool:
        if identity in self._gone:
            return False
        self._sent[identity].append(message)
        return True

    def deliver(self, identity: bytes, message: Inbound) -> None:
        """Queue a message as if the driver on `identity` had sent it."""
        self._gone.discard(identity)
        self._inbox.put_nowait((identity, message))

    def sent_to(self, identity: bytes) -> list[Outbound]:
        """Everything sent to `identity`, oldest first."""
        return list(self._sent[identity])

    def take(self, identity: bytes) -> list[Outbound]:
        """Everything sent to `identity` since the last take, oldest first."""
        taken, self._sent[identity] = self._sent[identity], []
        return taken

    def drop(self, identity: bytes) -> None:
        """The connection vanished: later sends to it fail."""
        self._gone.add(identity)
