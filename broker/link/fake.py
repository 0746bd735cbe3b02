"""An in-memory driver link for unit tests of the hub, attestor and dispatcher (no sockets).

A test plays the drivers: `deliver()` queues what a driver says, `sent_to()` reads what the
broker said to a connection, `drop()` makes a connection unreachable the way a vanished
ZeroMQ peer is, and `refuse()` stands for what the socket refuses before a message exists (an
unknown key at the handshake, a malformed frame).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import itertools
from collections import defaultdict

import zmq

from broker.link.messages import Inbound, Outbound
from broker.link.peer import Peer

_connections = itertools.count(1)


def make_peer(device_id: str, route: bytes | None = None) -> tuple[Peer, bytes]:
    """A new connection with a fresh CurveZMQ key pair authorised for `device_id`, and its Z85
    secret key (which opens none of its lease grants: those are sealed to the grant key its
    Hello announces)."""
    public, secret = zmq.curve_keypair()
    route = route if route is not None else public[:16]
    peer = Peer(
        key=public.decode("ascii"),
        device_id=device_id,
        route=route,
        connection=next(_connections),
    )
    return peer, secret


def reconnect(peer: Peer, route: bytes | None = None) -> Peer:
    """The same key on a new connection (on `route`, or the same routing id)."""
    return dataclasses.replace(
        peer, route=peer.route if route is None else route, connection=next(_connections)
    )


class FakeLink:
    """Implements `broker.link.port.LinkPort`."""

    def __init__(self) -> None:
        self._inbox: asyncio.Queue[tuple[Peer, Inbound]] = asyncio.Queue()
        self._sent: defaultdict[Peer, list[Outbound]] = defaultdict(list)
        self._gone: set[Peer] = set()
        self._refusals: collections.Counter[str] = collections.Counter()

    async def recv(self) -> tuple[Peer, Inbound]:
        return await self._inbox.get()

    async def send(self, peer: Peer, message: Outbound) -> bool:
        if peer in self._gone:
            return False
        self._sent[peer].append(message)
        return True

    def take_refusals(self) -> dict[str, int]:
        taken = dict(self._refusals)
        self._refusals.clear()
        return taken

    def deliver(self, peer: Peer, message: Inbound) -> None:
        """Queue a message as if the driver on `peer` had sent it."""
        self._gone.discard(peer)
        self._inbox.put_nowait((peer, message))

    def refuse(self, reason: str, count: int = 1) -> None:
        """As if the socket had refused `count` handshakes or frames for `reason`."""
        self._refusals[reason] += count

    def sent_to(self, peer: Peer) -> list[Outbound]:
        """Everything sent to `peer`, oldest first."""
        return list(self._sent[peer])

    def take(self, peer: Peer) -> list[Outbound]:
        """Everything sent to `peer` since the last take, oldest first."""
        taken, self._sent[peer] = self._sent[peer], []
        return taken

    def drop(self, peer: Peer) -> None:
        """The connection vanished: later sends to it fail."""
        self._gone.add(peer)
