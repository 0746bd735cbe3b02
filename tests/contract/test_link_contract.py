"""One driver-link contract, run against the ZeroMQ socket (CurveZMQ on 127.0.0.1) and the
fake link the unit tests use: what a driver says arrives as a domain message with the identity
of its connection, an answer to that identity reaches that driver and no other, and a send to a
connection that is gone says so."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

import pytest
import zmq
import zmq.asyncio

from broker.link import codec
from broker.link import messages as m
from broker.link.fake import FakeLink
from broker.link.port import LinkPort
from broker.link.socket import DriverLink
from qtestbed.shared.linkkeys import authorize_client, configure_client, create_keypair
from qtestbed.v1 import driver_link_pb2 as pb


class Peer(Protocol):
    """One driver's end of the link."""

    async def hello(self, device_id: str) -> None: ...

    async def heard(self) -> pb.LinkMessage: ...

    async def vanish(self) -> None: ...


class Pair(Protocol):
    link: LinkPort

    async def peer(self) -> Peer: ...

    async def close(self) -> None: ...


class _FakePeer:
    def __init__(self, link: FakeLink) -> None:
        self.link = link
        self.identity = uuid.uuid4().bytes

    async def hello(self, device_id: str) -> None:
        self.link.deliver(self.identity, _hello(device_id))

    async def heard(self) -> pb.LinkMessage:
        [message] = self.link.take(self.identity)
        return _as_frame(message)

    async def vanish(self) -> None:
        self.link.drop(self.identity)


class _FakePair:
    def __init__(self) -> None:
        self.fake = FakeLink()
        self.link: LinkPort = self.fake

    async def peer(self) -> Peer:
        return _FakePeer(self.fake)

    async def close(self) -> None:
        return None


class _ZmqPeer:
    def __init__(self, ctx: zmq.asyncio.Context, endpoint: str, secret: Path, broker: Path) -> None:
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        configure_client(self.sock, secret, broker)
        self.sock.connect(endpoint)

    async def hello(self, device_id: str) -> None:
        frame = pb.LinkMessage(hello=pb.Hello(device_id=device_id, num_qubits=5))
        await self.sock.send(frame.SerializeToString())

    async def heard(self) -> pb.LinkMessage:
        message = pb.LinkMessage()
        message.ParseFromString(await asyncio.wait_for(self.sock.recv(), timeout=10))
        return message

    async def vanish(self) -> None:
        self.sock.close(linger=0)
        await asyncio.sleep(0)


class _ZmqPair:
    def __init__(self, keys: Path) -> None:
        self.keys = keys
        (keys / "clients").mkdir(parents=True)
        _public, secret = create_keypair(keys, "broker")
        self.socket = DriverLink("tcp://127.0.0.1:0", secret_key=secret, clients=keys / "clients")
        self.link: LinkPort = self.socket
        self.ctx = zmq.asyncio.Context()
        self.peers: list[_ZmqPeer] = []

    async def peer(self) -> Peer:
        public, secret = create_keypair(self.keys, f"driver-{uuid.uuid4().hex[:8]}")
        authorize_client(public, self.keys / "clients")
        self.socket.reload_clients()  # authorised before it connects
        peer = _ZmqPeer(self.ctx, self.socket.endpoint, secret, self.keys / "broker.key")
        self.peers.append(peer)
        return peer

    async def close(self) -> None:
        for peer in self.peers:
            peer.sock.close(linger=0)
        self.ctx.term()
        self.socket.close()


def _hello(device_id: str) -> m.Hello:
    return m.Hello(
        device_id=device_id,
        num_qubits=5,
        basis_gates=(),
        coupling_map=(),
        backend="",
        driver_build="",
        certificate_chain=b"",
    )


def _as_frame(message: m.Outbound) -> pb.LinkMessage:
    """What the fake link holds, as the frame the socket would have carried."""
    frame = pb.LinkMessage()
    frame.ParseFromString(codec.encode(message))
    return frame


@pytest.fixture(params=["zmq", "fake"])
async def pair(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    made: Any = _ZmqPair(tmp_path / "keys") if request.param == "zmq" else _FakePair()
    try:
        yield made
    finally:
        await made.close()


async def _received(link: LinkPort) -> tuple[bytes, m.Inbound]:
    return await asyncio.wait_for(link.recv(), timeout=10)


async def test_what_a_driver_says_arrives_as_a_message_with_its_identity(pair: Pair) -> None:
    first, second = await pair.peer(), await pair.peer()
    await first.hello("dev-a")
    who_a, said_a = await _received(pair.link)
    await second.hello("dev-b")
    who_b, said_b = await _received(pair.link)
    assert isinstance(said_a, m.Hello)
    assert isinstance(said_b, m.Hello)
    assert (said_a.device_id, said_b.device_id) == ("dev-a", "dev-b")
    assert who_a != who_b


async def test_an_answer_reaches_the_driver_it_was_sent_to(pair: Pair) -> None:
    first, second = await pair.peer(), await pair.peer()
    await first.hello("dev-a")
    who_a, _ = await _received(pair.link)
    await second.hello("dev-b")
    who_b, _ = await _received(pair.link)
    assert await pair.link.send(who_b, m.Challenge(nonce=b"n" * 32, deadline_seconds=5.0))
    assert await pair.link.send(who_a, m.Heartbeat(seq=7))
    to_b = await second.heard()
    to_a = await first.heard()
    assert to_b.WhichOneof("body") == "challenge"
    assert bytes(to_b.challenge.nonce) == b"n" * 32
    assert (to_a.WhichOneof("body"), to_a.heartbeat.seq) == ("heartbeat", 7)


async def test_a_send_to_a_connection_that_is_gone_says_so(pair: Pair) -> None:
    peer = await pair.peer()
    await peer.hello("dev-a")
    who, _ = await _received(pair.link)
    await peer.vanish()

    async def delivered() -> bool:
        for _ in range(200):  # ZeroMQ notices a closed peer asynchronously
            if not await pair.link.send(who, m.Heartbeat(seq=1)):
                return False
            await asyncio.sleep(0.01)
        return True

    assert not await delivered()
