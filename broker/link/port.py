"""The driver link as the hub, attestor and dispatcher see it: domain messages to and from an
authenticated peer. `broker.link.socket` is the ZeroMQ implementation, `broker.link.fake` the
in-memory one for unit tests."""

from __future__ import annotations

from typing import Protocol

from broker.link.messages import Inbound, Outbound
from broker.link.peer import Peer


class LinkPort(Protocol):
    async def recv(self) -> tuple[Peer, Inbound]:
        """The next message any driver sent, with the peer (key, device, route) that sent it."""

    async def send(self, peer: Peer, message: Outbound) -> bool:
        """Deliver `message`; False when that connection is gone (nothing was delivered)."""

    def take_refusals(self) -> dict[str, int]:
        """What the link itself refused since the last call (unknown keys, malformed frames),
        counted by reason: the hub hands these to the link door."""
