"""One driver-link contract, run against the ZeroMQ socket (CurveZMQ on 127.0.0.1) and the
fake link the unit tests use: what a driver says arrives as a domain message with the peer of
its connection (its proved link key and the device that key is authorised for), an answer to
that peer reaches that driver and no other, a lease grant is sealed so that only the grant key
that connection's Hello announced opens it (not the link key, which another host may hold
too), a send to a connection that is gone says so, and what the link refuses before a message
exists is counted by reason."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

import pytest
import zmq
import zmq.asyncio
from zmq.utils import z85

from broker.jobs.model import Circuit
from broker.link import codec
from broker.link import messages as m
from broker.link.fake import FakeLink, make_peer, reconnect
from broker.link.peer import Peer
from broker.link.port import LinkPort
from broker.link.socket import DriverLink
from drivers.grants import GrantError, GrantKey, open_grant
from qtestbed.shared.circuits import CircuitFormat
from qtestbed.shared.linkkeys import (
    authorize_client,
    configure_client,
    create_keypair,
    load_keypair,
)
from qtestbed.v1 import driver_link_pb2 as pb


class Driver(Protocol):
    """One driver's end of the link, holding a link key authorised for one device."""

    public: str  # its Z85 link public key
    secret: bytes  # its raw Curve25519 secret key
    grant: GrantKey  # its current connection's grant key (a new one for each connection)

    async def hello(self, device_id: str) -> None: ...

    async def heard(self) -> pb.LinkMessage: ...

    async def garbage(self) -> None: ...

    async def vanish(self) -> None: ...

    async def reconnect(self) -> None:
        """A new connection with the same key and the same routing id."""


class Pair(Protocol):
    link: LinkPort

    async def peer(self, device_id: str = "dev-a") -> Driver: ...

    async def stranger(self) -> None:
        """Try to connect with a key nobody authorised."""

    async def close(self) -> None: ...


class _FakePeer:
    def __init__(self, link: FakeLink, device_id: str) -> None:
        self.link = link
        self.peer, secret = make_peer(device_id, uuid.uuid4().bytes)
        self.public = self.peer.key
        self.secret = z85.decode(secret)
        self.grant = GrantKey.new()

    async def hello(self, device_id: str) -> None:
        self.link.deliver(self.peer, _hello(device_id, self.grant))

    async def heard(self) -> pb.LinkMessage:
        [message] = self.link.take(self.peer)
        return _as_frame(message, self.peer)

    async def garbage(self) -> None:
        self.link.refuse("malformed_frame")

    async def vanish(self) -> None:
        self.link.drop(self.peer)

    async def reconnect(self) -> None:
        self.peer = reconnect(self.peer)
        self.grant = GrantKey.new()


class _FakePair:
    def __init__(self) -> None:
        self.fake = FakeLink()
        self.link: LinkPort = self.fake

    async def peer(self, device_id: str = "dev-a") -> Driver:
        return _FakePeer(self.fake, device_id)

    async def stranger(self) -> None:
        self.fake.refuse("unknown_key")

    async def close(self) -> None:
        return None


class _ZmqPeer:
    def __init__(self, ctx: zmq.asyncio.Context, endpoint: str, secret: Path, broker: Path) -> None:
        public, secret_z85 = load_keypair(secret)
        self.public = public.decode("ascii")
        self.secret = z85.decode(secret_z85)
        self._connect = (ctx, endpoint, secret, broker)
        self.route = uuid.uuid4().bytes
        self.sock = self._socket()
        self.grant = GrantKey.new()

    def _socket(self) -> zmq.asyncio.Socket:
        ctx, endpoint, secret, broker = self._connect
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTING_ID, self.route)
        configure_client(sock, secret, broker)
        sock.connect(endpoint)
        return sock

    async def reconnect(self) -> None:
        self.sock.close(linger=0)
        self.sock = self._socket()
        self.grant = GrantKey.new()

    async def garbage(self) -> None:
        await self.sock.send(b"\xff\xff not a LinkMessage")

    async def hello(self, device_id: str) -> None:
        hello = pb.Hello(device_id=device_id, num_qubits=5, grant_key=self.grant.public)
        await self.sock.send(pb.LinkMessage(hello=hello).SerializeToString())

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

    async def peer(self, device_id: str = "dev-a") -> Driver:
        public, secret = create_keypair(self.keys, f"driver-{uuid.uuid4().hex[:8]}")
        authorize_client(public, self.keys / "clients", device_id=device_id)
        self.socket.reload_clients()  # authorised before it connects
        peer = _ZmqPeer(self.ctx, self.socket.endpoint, secret, self.keys / "broker.key")
        self.peers.append(peer)
        return peer

    async def stranger(self) -> None:
        _public, secret = create_keypair(self.keys / "strangers", "stranger")
        peer = _ZmqPeer(self.ctx, self.socket.endpoint, secret, self.keys / "broker.key")
        self.peers.append(peer)
        await peer.hello("dev-a")

    async def close(self) -> None:
        for peer in self.peers:
            peer.sock.close(linger=0)
        self.ctx.term()
        self.socket.close()


def _hello(device_id: str, grant: GrantKey) -> m.Hello:
    return m.Hello(
        device_id=device_id,
        num_qubits=5,
        basis_gates=(),
        coupling_map=(),
        backend="",
        driver_build="",
        certificate_chain=b"",
        grant_key=grant.public,
    )


def _as_frame(message: m.Outbound, peer: Peer) -> pb.LinkMessage:
    """What the fake link holds, as the frame the socket would have carried to `peer`."""
    frame = pb.LinkMessage()
    frame.ParseFromString(codec.encode(message, link_key=peer.public_key))
    return frame


@pytest.fixture(params=["zmq", "fake"])
async def pair(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    made: Any = _ZmqPair(tmp_path / "keys") if request.param == "zmq" else _FakePair()
    try:
        yield made
    finally:
        await made.close()


async def _received(link: LinkPort) -> tuple[Peer, m.Inbound]:
    return await asyncio.wait_for(link.recv(), timeout=10)


async def test_what_a_driver_says_arrives_as_a_message_with_its_peer(pair: Pair) -> None:
    first, second = await pair.peer("dev-a"), await pair.peer("dev-b")
    await first.hello("dev-a")
    who_a, said_a = await _received(pair.link)
    await second.hello("dev-b")
    who_b, said_b = await _received(pair.link)
    assert isinstance(said_a, m.Hello)
    assert isinstance(said_b, m.Hello)
    assert (said_a.device_id, said_b.device_id) == ("dev-a", "dev-b")
    assert who_a != who_b
    # The peer is the key the handshake proved and the device that key is authorised for.
    assert (who_a.key, who_a.device_id) == (first.public, "dev-a")
    assert (who_b.key, who_b.device_id) == (second.public, "dev-b")
    # Each Hello carries the grant key its connection made.
    assert (said_a.grant_key, said_b.grant_key) == (first.grant.public, second.grant.public)


async def test_a_new_connection_on_the_same_route_is_a_new_peer(pair: Pair) -> None:
    driver = await pair.peer("dev-a")
    await driver.hello("dev-a")
    before, _ = await _received(pair.link)
    await driver.reconnect()

    async def next_peer() -> Peer:
        # ZeroMQ admits the new connection on the routing id once it has seen the old one close;
        # one that raced ahead of that close is dropped for good, so connect again now and then.
        for attempt in range(100):
            if attempt and attempt % 10 == 0:
                await driver.reconnect()
            await driver.hello("dev-a")
            with contextlib.suppress(TimeoutError):
                who, _ = await asyncio.wait_for(pair.link.recv(), timeout=0.2)
                if who != before:
                    return who
        raise AssertionError("no Hello arrived from the new connection")

    after = await next_peer()
    assert (after.key, after.route, after.device_id) == (before.key, before.route, "dev-a")
    assert after.connection != before.connection


async def test_the_device_comes_from_the_key_never_from_the_hello(pair: Pair) -> None:
    driver = await pair.peer("dev-a")
    await driver.hello("dev-b")
    who, said = await _received(pair.link)
    assert isinstance(said, m.Hello)
    assert said.device_id == "dev-b"  # what it claimed, for the hub to refuse
    assert who.device_id == "dev-a"  # what its key is authorised for


async def test_a_lease_grant_opens_only_with_its_connections_grant_key(pair: Pair) -> None:
    first, second = await pair.peer(), await pair.peer()
    await first.hello("dev-a")
    who, hello = await _received(pair.link)
    assert isinstance(hello, m.Hello)
    circuit = Circuit(
        format=CircuitFormat.OPENQASM2, payload=b"secret circuit", digest="d", num_qubits=1, depth=1
    )
    grant = m.LeaseGrant(
        grant_key=hello.grant_key,
        lease_id="lease-1",
        job_id="job-1",
        circuit=circuit,
        shots=10,
        dispatch_nonce=b"n" * 32,
        lease_seconds=60.0,
    )
    assert await pair.link.send(who, grant)
    heard = (await first.heard()).lease
    assert heard.circuit_payload == b""  # nothing readable outside the sealed box
    assert b"secret circuit" not in heard.SerializeToString()
    link_key = z85.decode(first.public)
    inner = open_grant(heard, first.grant, link_key=link_key)
    assert (inner.lease_id, inner.circuit_payload) == ("lease-1", b"secret circuit")
    # Not with the link secret (another host may hold that), nor another connection's grant key.
    for wrong in (GrantKey.from_secret(first.secret), second.grant, GrantKey.new()):
        with pytest.raises(GrantError):
            open_grant(heard, wrong, link_key=link_key)
    # Bound to the link key too: as another key's grant, it does not open even with its key.
    with pytest.raises(GrantError):
        open_grant(heard, first.grant, link_key=z85.decode(second.public))


async def test_what_the_link_refuses_is_counted_by_reason(pair: Pair) -> None:
    driver = await pair.peer()
    await driver.garbage()
    await pair.stranger()
    await driver.hello("dev-a")
    await _received(pair.link)  # the garbage before it was dropped, not passed on

    async def counted() -> dict[str, int]:
        total: dict[str, int] = {}
        for _ in range(500):  # the handshake is refused asynchronously
            for reason, count in pair.link.take_refusals().items():
                total[reason] = total.get(reason, 0) + count
            if total.get("unknown_key"):
                return total
            await asyncio.sleep(0.01)
        return total

    total = await counted()
    assert total.get("malformed_frame") == 1
    assert total.get("unknown_key", 0) >= 1


async def test_an_answer_reaches_the_driver_it_was_sent_to(pair: Pair) -> None:
    first, second = await pair.peer("dev-a"), await pair.peer("dev-b")
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
