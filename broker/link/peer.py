"""Who is at the other end of a driver connection, as the link authenticated it.

A connection IS its CurveZMQ public key (the ZAP User-Id the handshake proved), authorised for
exactly one device id. The ZeroMQ routing id only says where to send: a peer can choose it, so
it never identifies anything, is never logged, and a connection is the pair of both.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from zmq.utils import z85


@dataclass(frozen=True, kw_only=True, slots=True)
class Peer:
    # Z85 CurveZMQ public key the handshake proved (what the broker's clients folder lists).
    key: str
    # The one device id this key is authorised for (from the authorisation, not the driver).
    device_id: str
    # ZeroMQ routing id: transport detail, chosen by the peer; part of equality so that two
    # connections of one key are two connections.
    route: bytes = field(repr=False)

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte Curve25519 public key (what lease grants are sealed to)."""
        return z85.decode(self.key)

    @property
    def label(self) -> str:
        """How logs name the connection: the device and a short key prefix, never the route."""
        return f"{self.device_id} (link key {self.key[:8]}...)"
