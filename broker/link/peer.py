"""Who is at the other end of a driver connection, as the link authenticated it.

A connection IS its CurveZMQ public key (the ZAP User-Id the handshake proved), authorised for
exactly one device id, on one transport connection (the number the ZAP handler gave it). The
ZeroMQ routing id only says where to send: a peer can choose it, so it never identifies
anything and is never logged; a new connection that reuses one is still a new connection.
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
    # ZeroMQ routing id: where replies go; transport detail, and the peer may choose it.
    route: bytes = field(repr=False)
    # The handshake's number (the ZAP handler counts them): two connections of one key, or one
    # key reconnecting on the same routing id, are two peers.
    connection: int

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte Curve25519 public key (lease grants are bound to it, and sealed to the
        connection's own grant key)."""
        return z85.decode(self.key)

    @property
    def label(self) -> str:
        """How logs name the connection: the device and a short key prefix, never the route."""
        return f"{self.device_id} (link key {self.key[:8]}...)"
