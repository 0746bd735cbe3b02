"""The broker's end of the driver link: a ZeroMQ ROUTER carrying one LinkMessage per frame.

A ZAP handler (`broker.link.gatekeeper`) admits only authorised CurveZMQ keys, sets the
connection's User-Id to the key and numbers the connection; every inbound message carries the
`Peer` built from those properties (and the device the key is authorised for), never from
anything the driver sent. Frames are decoded by
`broker.link.codec`: one that is not a message for the broker is dropped, never passed on.
Refusals made here (an unknown key at the handshake, a malformed frame) are tallied by reason,
without a log line each, and handed to the link door by `take_refusals`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from pathlib import Path

import zmq
import zmq.asyncio

from broker.link import codec
from broker.link.gatekeeper import CONNECTION_PROPERTY, Gatekeeper
from broker.link.messages import Inbound, Outbound
from broker.link.peer import Peer
from qtestbed.shared.linkkeys import authorised_keys, configure_server

log = logging.getLogger(__name__)

# Larger frames are refused by ZeroMQ itself before they are buffered.
MAX_FRAME_BYTES = 16 * 1024 * 1024


class DriverLink:
    """Bind once, then `recv()` (peer, message) pairs and `send()` to a peer."""

    def __init__(self, endpoint: str, *, secret_key: Path, clients: Path) -> None:
        """Bind with CurveZMQ: encrypted, and only drivers whose public key `clients` authorises
        for a device may connect (checked by a ZAP handler before any message reaches us)."""
        self._ctx = zmq.asyncio.Context()
        self._clients = clients
        self._refusals: collections.Counter[str] = collections.Counter()
        self._gate = Gatekeeper(self._ctx, self._refusals)
        self.reload_clients()
        self._sock = self._ctx.socket(zmq.ROUTER)
        configure_server(self._sock, secret_key)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
        # Tell us (EHOSTUNREACH) instead of silently dropping messages to vanished drivers.
        self._sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self._sock.bind(endpoint.replace(":0", ":*") if endpoint.endswith(":0") else endpoint)
        self.endpoint: str = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)

    async def recv(self) -> tuple[Peer, Inbound]:
        while True:
            # Yield between frames: a stream of dropped frames must not hold the event loop.
            await asyncio.sleep(0)
            frames = await self._sock.recv_multipart(copy=False)
            if len(frames) != 2:
                self._refusals["malformed_frame"] += 1
                continue
            route, payload = frames
            peer = self._peer(route.bytes, payload)
            if peer is None:
                continue
            message = codec.decode(payload.bytes)
            if message is None:
                self._refusals["malformed_frame"] += 1
                continue
            return peer, message

    def _peer(self, route: bytes, frame: zmq.Frame) -> Peer | None:
        """Who sent `frame`: the key the handshake proved, and the device it is authorised for
        now (a key removed since it connected is refused from then on)."""
        key = frame.get("User-Id")  # set by the ZAP handler: the proved key
        connection = frame.get(CONNECTION_PROPERTY)  # set by the ZAP handler too
        device_id = self._gate.keys.devices.get(key) if isinstance(key, str) else None
        if device_id is None or not isinstance(key, str) or not isinstance(connection, str):
            self._refusals["unknown_key"] += 1
            return None
        return Peer(key=key, device_id=device_id, route=route, connection=int(connection))

    async def send(self, peer: Peer, message: Outbound) -> bool:
        """False when the driver is no longer connected (the message was not delivered)."""
        frame = codec.encode(message, link_key=peer.public_key)
        try:
            await self._sock.send_multipart([peer.route, frame])
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EHOSTUNREACH:
                return False
            raise
        return True

    def take_refusals(self) -> dict[str, int]:
        """The refusals made here since the last call, by reason."""
        taken = dict(self._refusals)
        self._refusals.clear()
        return taken

    def reload_clients(self) -> None:
        """Re-read the authorised driver keys (an operator added or removed one)."""
        keys = authorised_keys(self._clients)
        for name in keys.unusable:
            log.error(
                "driver key %s in %s names no device it is authorised for, so it authorises "
                "nothing; run `qtestbed facility upgrade` or authorise it again",
                name,
                self._clients,
            )
        self._gate.keys = keys

    def close(self) -> None:
        self._gate.close()
        self._sock.close(linger=0)
        self._ctx.term()
