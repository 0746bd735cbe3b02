"""Runs the driver link: routes each incoming message to the attestor or the dispatcher, and
on a fixed tick sends heartbeats, drops silent drivers, refreshes attestations and reaps leases.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from broker.link.attestor import Attestor
from broker.link.dispatcher import Dispatcher
from broker.link.fleet import DriverConnection, Fleet
from broker.link.socket import DriverLink
from broker.settings import TimingSettings
from qtestbed.v1 import driver_link_pb2 as link_pb

log = logging.getLogger(__name__)


class DriverHub:
    def __init__(
        self,
        *,
        link: DriverLink,
        fleet: Fleet,
        attestor: Attestor,
        dispatcher: Dispatcher,
        timing: TimingSettings,
    ) -> None:
        self.link = link
        self.fleet = fleet
        self.attestor = attestor
        self.dispatcher = dispatcher
        self.timing = timing
        self._beat = 0
        self.on_tick: list[Callable[[], Awaitable[None]]] = []

    async def receive_forever(self) -> None:
        while True:
            identity, message = await self.link.recv()
            try:
                await self._route(identity, message)
            except Exception:
                log.exception("handling a %s message failed", message.WhichOneof("body"))

    async def _route(self, identity: bytes, message: link_pb.LinkMessage) -> None:
        kind = message.WhichOneof("body")
        if kind == "hello":
            old = self.fleet.get(identity)
            if old is not None:
                await self.dispatcher.disconnect(old, "said hello again")
            await self.attestor.on_hello(identity, message.hello)
            return
        conn = self.fleet.get(identity)
        if conn is None:
            bye = link_pb.Goodbye(reason="unknown connection: send Hello first")
            await self.link.send(identity, link_pb.LinkMessage(goodbye=bye))
            return
        conn.last_seen = self.dispatcher.ledger.clock.now()
        await self._route_known(conn, kind, message)

    async def _route_known(
        self, conn: DriverConnection, kind: str | None, message: link_pb.LinkMessage
    ) -> None:
        if kind == "evidence":
            await self.attestor.on_evidence(conn, message.evidence)
        elif kind == "started":
            await self.dispatcher.on_started(conn, message.started)
        elif kind == "result":
            await self.dispatcher.on_result(conn, message.result)
        elif kind == "failure":
            await self.dispatcher.on_failure(conn, message.failure)
        elif kind == "goodbye":
            await self.dispatcher.disconnect(conn, f"driver said goodbye: {message.goodbye.reason}")
        elif kind == "heartbeat":
            self.dispatcher.ledger.metrics.heartbeats.labels(conn.device_id).inc()
        else:
            log.warning("ignoring unexpected %s message from %s", kind, conn.device_id)

    async def tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self.timing.tick_seconds)
            try:
                await self.tick()
            except Exception:
                log.exception("periodic maintenance failed; retrying next tick")

    async def tick(self) -> None:
        now = self.dispatcher.ledger.clock.now()
        silence = self.timing.heartbeat_seconds * self.timing.heartbeat_misses
        for conn in self.fleet:
            if now - conn.last_seen > silence:
                await self.dispatcher.disconnect(conn, f"no heartbeat for {silence:.1f}s")
        self._beat += 1
        beat = link_pb.LinkMessage(heartbeat=link_pb.Heartbeat(seq=self._beat))
        for conn in self.fleet:
            if not await self.link.send(conn.identity, beat):
                await self.dispatcher.disconnect(conn, "unreachable")
        await self.attestor.maintain(now)
        await self.dispatcher.reap(now)
        for device_id in self.fleet.device_ids():
            self.dispatcher.kick(device_id)
        for callback in self.on_tick:
            await callback()
