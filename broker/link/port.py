"""The driver link as the hub, attestor and dispatcher see it: domain messages to and from a
connection identity. `broker.link.socket` is the ZeroMQ implementation, `broker.link.fake` the
in-memory one for unit tests."""

from __future__ import annotations

from typing import Protocol

from broker.link.messages import Inbound, Outbound


class LinkPort(Protocol):
    async def recv(self) -> tuple[bytes, Inbound]:
        """The next message any driver sent, with the identity of its connection."""

    async def send(self, identity: bytes, message: Outbound) -> bool:
        """Deliver `message`; False when that connection is gone (nothing was delivered)."""
