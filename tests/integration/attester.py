"""A scripted Attester for integration tests: a raw ZeroMQ DEALER on the broker's driver link that
says exactly what the test tells it to, where an honest driver agent would say the right thing.

It can announce any device id with any certificate chain, sign evidence with any key, and answer
a challenge with any bytes. Like a driver agent, it makes a grant key pair for its connection
and announces it in its Hello; `open()` reads a lease grant sealed to it. While a test waits on
it, it keeps the link alive (the broker drops drivers that fall silent) and counts the broker's
heartbeats, one per broker tick, which tests use as a barrier: after two of them every dispatch
the broker would make has been attempted.
"""

from __future__ import annotations

import collections
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import zmq
from zmq.utils import z85

from attestation.dsse import Envelope, sign_envelope
from attestation.evidence import (
    EVIDENCE_PAYLOAD_TYPE,
    EvidenceClaims,
    Measurements,
    encode_claims,
)
from attestation.keys import SigningKey
from drivers.grants import GrantKey, open_grant
from qtestbed.shared.linkkeys import configure_client, load_keypair
from qtestbed.v1 import driver_link_pb2 as link_pb

T = TypeVar("T")

# Well under the broker's silence limit (heartbeat_seconds x heartbeat_misses) in every test.
_BEAT_SECONDS = 0.1


class LinkClosed(AssertionError):
    """The broker said Goodbye while the test expected something else."""


@dataclass(frozen=True, kw_only=True, slots=True)
class LinkEndpoint:
    """Where the broker's driver link listens, and the CurveZMQ keys a driver connects with."""

    address: str
    secret_key: Path
    broker_key: Path

    def connect(self, sock: zmq.Socket[bytes], *, route: bytes | None = None) -> None:
        """Connect `sock` with this key; `route` chooses its routing id, as any peer may."""
        configure_client(sock, self.secret_key, self.broker_key)
        if route is not None:
            sock.setsockopt(zmq.ROUTING_ID, route)
        sock.connect(self.address)

    @property
    def link_key(self) -> bytes:
        """The raw CurveZMQ public key of this link key (lease grants are bound to it)."""
        public, _secret = load_keypair(self.secret_key)
        return z85.decode(public)


class Attester:
    """One connection to the broker, announced with a Hello as soon as it is made."""

    def __init__(
        self,
        endpoint: LinkEndpoint,
        *,
        device_id: str,
        chain: bytes,
        key: SigningKey,
        measurements: Measurements,
        route: bytes | None = None,
    ) -> None:
        self.device_id = device_id
        self.key = key
        self.measurements = measurements
        self.boot_epoch = uuid.uuid4().hex
        self.link_key = endpoint.link_key
        self.grant = GrantKey.new()  # this connection's own, as a driver agent makes one
        self.heartbeats = 0  # broker heartbeats received so far
        self._inbox: collections.deque[link_pb.LinkMessage] = collections.deque()
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 1000)  # so the Goodbye of close() is delivered
        endpoint.connect(self._sock, route=route)
        self._last_sent = 0.0
        self._closed = False
        hello = link_pb.Hello(
            device_id=device_id,
            num_qubits=measurements.num_qubits,
            backend="aer",
            driver_build=measurements.driver_build,
            certificate_chain=chain,
            grant_key=self.grant.public,
        )
        self.send(link_pb.LinkMessage(hello=hello))

    # ------------------------------------------------------------------ the link

    def send(self, message: link_pb.LinkMessage) -> None:
        self._sock.send(message.SerializeToString())
        self._last_sent = time.monotonic()

    def _pump(self, wait: float) -> None:
        """Read what has arrived (waiting up to `wait` seconds) and heartbeat when due."""
        if self._sock.poll(int(wait * 1000)):
            while self._sock.poll(0):
                message = link_pb.LinkMessage()
                message.ParseFromString(self._sock.recv())
                if message.WhichOneof("body") == "heartbeat":
                    self.heartbeats += 1
                else:
                    self._inbox.append(message)
        if time.monotonic() - self._last_sent >= _BEAT_SECONDS:
            self.send(link_pb.LinkMessage(heartbeat=link_pb.Heartbeat()))

    def next(self, *kinds: str, timeout: float = 30.0) -> link_pb.LinkMessage:
        """The next message of one of `kinds`, skipping others; a Goodbye not asked for raises."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while self._inbox:
                message = self._inbox.popleft()
                kind = message.WhichOneof("body")
                if kind in kinds:
                    return message
                if kind == "goodbye":
                    raise LinkClosed(f"broker said goodbye: {message.goodbye.reason}")
            self._pump(_BEAT_SECONDS)
        raise TimeoutError(f"no {' or '.join(kinds)} message from the broker in {timeout:.0f}s")

    def open(self, sealed: link_pb.LeaseGrant) -> link_pb.LeaseGrant:
        """A lease grant the broker sealed to this connection, opened (GrantError if not)."""
        return open_grant(sealed, self.grant, link_key=self.link_key)

    def lease(self, *, timeout: float = 30.0) -> link_pb.LeaseGrant:
        """The next lease grant, opened."""
        return self.open(self.next("lease", timeout=timeout).lease)

    def challenge(self) -> bytes:
        """The nonce of the next challenge."""
        return bytes(self.next("challenge").challenge.nonce)

    def answer(self, envelope: bytes) -> link_pb.AttestationVerdict:
        """Send `envelope` (any bytes) as evidence; the broker's verdict on it."""
        self.send(link_pb.LinkMessage(evidence=link_pb.EvidenceMessage(envelope=envelope)))
        return self.next("verdict").verdict

    def keep_alive_until(
        self, check: Callable[[], T | None], *, timeout: float = 30.0, what: str = "condition"
    ) -> T:
        """Heartbeat (and collect messages) until `check` returns something truthy."""
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
            self._pump(_BEAT_SECONDS)

    def keep_alive(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        self.keep_alive_until(lambda: time.monotonic() >= end, timeout=seconds + 5, what="time")

    def wait_ticks(self, count: int, *, timeout: float = 30.0) -> None:
        """Until `count` more broker ticks have passed (one heartbeat each)."""
        target = self.heartbeats + count
        self.keep_alive_until(
            lambda: self.heartbeats >= target, timeout=timeout, what=f"{count} broker ticks"
        )

    def vanish(self) -> None:
        """Drop the connection without a Goodbye, the way a crashed driver does."""
        if self._closed:
            return
        self._closed = True
        self._sock.close(linger=0)
        self._ctx.term()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        bye = link_pb.LinkMessage(goodbye=link_pb.Goodbye(reason="scripted attester done"))
        self._sock.send(bye.SerializeToString())
        self._sock.close()
        self._ctx.term()

    # ------------------------------------------------------------------ evidence

    def claims(
        self,
        nonce: bytes,
        *,
        counter: int = 1,
        issued_at: float | None = None,
        measurements: Measurements | None = None,
    ) -> EvidenceClaims:
        return EvidenceClaims(
            device_id=self.device_id,
            nonce=nonce,
            issued_at=time.time() if issued_at is None else issued_at,
            boot_epoch=self.boot_epoch,
            counter=counter,
            measurements=measurements or self.measurements,
        )

    def sign(
        self,
        claims: EvidenceClaims,
        *,
        key: SigningKey | None = None,
        payload_type: str = EVIDENCE_PAYLOAD_TYPE,
    ) -> Envelope:
        return sign_envelope(payload_type, encode_claims(claims), key or self.key)

    def evidence(
        self,
        nonce: bytes,
        *,
        counter: int = 1,
        issued_at: float | None = None,
        measurements: Measurements | None = None,
    ) -> bytes:
        """Evidence as an honest driver would send it, but for the claims changed here."""
        claims = self.claims(nonce, counter=counter, issued_at=issued_at, measurements=measurements)
        return self.sign(claims).to_json()


def probe(endpoint: LinkEndpoint, *, timeout: float = 30.0) -> None:
    """Return once the broker has handled every link message it received before this one.

    The broker handles link messages one at a time, in arrival order; a message from a
    connection that never said Hello is answered with a Goodbye, changing nothing.
    """
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        endpoint.connect(sock)
        sock.send(link_pb.LinkMessage(heartbeat=link_pb.Heartbeat()).SerializeToString())
        if not sock.poll(int(timeout * 1000)):
            raise TimeoutError("the broker did not answer a probe on the driver link")
        reply = link_pb.LinkMessage()
        reply.ParseFromString(sock.recv())
        assert reply.WhichOneof("body") == "goodbye", reply
    finally:
        sock.close()
        ctx.term()
