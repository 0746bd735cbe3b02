"""The broker's end of the driver link: a ZeroMQ ROUTER carrying one LinkMessage per frame.

Frames are decoded by `broker.link.codec`: one that is not a message for the broker is dropped
and counted, never passed on.
"""

from __future__ import annotations

import logging
from pathlib import Path

import zmq
import zmq.asyncio
from zmq.auth.asyncio import AsyncioAuthenticator

from broker.link import codec
from broker.link.messages import Inbound, Outbound
from qtestbed.shared.linkkeys import LinkKeyError, configure_server

log = logging.getLogger(__name__)

# Larger frames are refused by ZeroMQ itself before they are buffered.
MAX_FRAME_BYTES = 16 * 1024 * 1024


class DriverLink:
    """Bind once, then `recv()` (identity, message) pairs and `send()` to an identity."""

    def __init__(self, endpoint: str, *, secret_key: Path, clients: Path) -> None:
        """Bind with CurveZMQ: encrypted, and only drivers whose public key is in `clients`
        may connect (checked by a ZAP authenticator before any message reaches us)."""
        self._ctx = zmq.asyncio.Context()
        self._clients = clients
        self._auth = AsyncioAuthenticator(self._ctx)
        self._auth.start()
        self.reload_clients()
        self._sock = self._ctx.socket(zmq.ROUTER)
        configure_server(self._sock, secret_key)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
        # Tell us (EHOSTUNREACH) instead of silently dropping messages to vanished drivers.
        self._sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self._sock.bind(endpoint.replace(":0", ":*") if endpoint.endswith(":0") else endpoint)
        self.endpoint: str = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.malformed_frames = 0

    async def recv(self) -> tuple[bytes, Inbound]:
        while True:
            frames = await self._sock.recv_multipart()
            if len(frames) != 2:
                self.malformed_frames += 1
                log.warning("dropped a link message with %d frames (expected 2)", len(frames))
                continue
            identity, payload = frames
            message = codec.decode(payload)
            if message is None:
                self.malformed_frames += 1
                log.warning("dropped an undecodable link frame from %s", identity.hex())
                continue
            return identity, message

    async def send(self, identity: bytes, message: Outbound) -> bool:
        """False when the driver is no longer connected (the message was not delivered)."""
        try:
            await self._sock.send_multipart([identity, codec.encode(message)])
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EHOSTUNREACH:
                return False
            raise
        return True

    def reload_clients(self) -> None:
        """Re-read the authorised driver keys (an operator added or removed one)."""
        if not self._clients.is_dir():
            raise LinkKeyError(f"driver key folder {self._clients} does not exist")
        self._auth.configure_curve(domain="*", location=str(self._clients))

    def close(self) -> None:
        self._auth.stop()
        self._sock.close(linger=0)
        self._ctx.term()
