"""The ZAP handler of the driver link (ZeroMQ RFC 27): decides every CurveZMQ handshake.

It admits a client key only when the clients folder authorises it for a device, sets the
connection's User-Id to that key (Z85), and stamps each admitted connection with a number of its
own (the `X-Connection` property, from the ZAP reply's metadata), so that the broker can tell a
new connection from an old one even when a peer reuses a routing id. Every key turned away is
counted; nothing is logged per handshake.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import struct

import zmq
import zmq.asyncio
from zmq.utils import z85

from qtestbed.shared.linkkeys import AuthorisedKeys

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
CONNECTION_PROPERTY = "X-Connection"
_VERSION = b"1.0"


def _metadata(name: str, value: str) -> bytes:
    """One ZMTP metadata property: name length (1 byte), name, value length (4 bytes), value."""
    raw_name, raw_value = name.encode("ascii"), value.encode("ascii")
    return bytes([len(raw_name)]) + raw_name + struct.pack(">I", len(raw_value)) + raw_value


class Gatekeeper:
    def __init__(self, ctx: zmq.asyncio.Context, refusals: collections.Counter[str]) -> None:
        self.keys = AuthorisedKeys(devices={}, unusable=())
        self._refusals = refusals
        self._numbers = itertools.count(1)
        self._sock = ctx.socket(zmq.REP)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.bind(ZAP_ENDPOINT)  # before any socket of this context accepts a peer
        self._task: asyncio.Task[None] = asyncio.get_running_loop().create_task(self._serve())

    async def _serve(self) -> None:
        while True:
            request = await self._sock.recv_multipart()
            await self._sock.send_multipart(self.decide(request))

    def decide(self, request: list[bytes]) -> list[bytes]:
        """The ZAP reply to one request: 200 with the key as User-Id, or 400."""
        if len(request) < 6:
            request_id = request[1] if len(request) > 1 else b""
            return [_VERSION, request_id, b"400", b"Bad request", b"", b""]
        version, request_id, _domain, _address, _identity, mechanism, *credentials = request
        key = z85.encode(credentials[0]).decode("ascii") if len(credentials) == 1 else ""
        if version != _VERSION or mechanism != b"CURVE" or key not in self.keys.devices:
            self._refusals["unknown_key"] += 1
            return [_VERSION, request_id, b"400", b"Unknown key", b"", b""]
        number = str(next(self._numbers))
        metadata = _metadata(CONNECTION_PROPERTY, number)
        return [_VERSION, request_id, b"200", b"OK", key.encode("ascii"), metadata]

    def close(self) -> None:
        self._task.cancel()
        self._sock.close(linger=0)
