"""Runs the driver link: routes each incoming message to the attestor or the lease keeper, and
on a fixed tick sends heartbeats, drops silent drivers, refreshes attestations, reaps leases
and runs the broker's other periodic work."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from broker.clock import Clock
from broker.jobs.wakeups import DispatchWakeups
from broker.link import messages as m
from broker.link.attestor import Attestor
from broker.link.fleet import DriverConnection, Fleet
from broker.link.leases import LeaseKeeper
from broker.link.port import LinkPort
from broker.metrics import BrokerMetrics
from broker.settings import TimingSettings

log = logging.getLogger(__name__)

Tick = Callable[[], Awaitable[None]]


class DriverHub:
    def __init__(
        self,
        *,
        link: LinkPort,
        fleet: Fleet,
        attestor: Attestor,
        leases: LeaseKeeper,
        clock: Clock,
        metrics: BrokerMetrics,
        timing: TimingSettings,
        wakeups: DispatchWakeups,
        ticks: Sequence[Tick] = (),
    ) -> None:
        self._link = link
        self._fleet = fleet
        self._attestor = attestor
        self._leases = leases
        self._clock = clock
        self._metrics = metrics
        self._timing = timing
        self._wakeups = wakeups
        self._ticks = tuple(ticks)  # the broker's other periodic work, after the link's own
        self._beat = 0

    async def receive_forever(self) -> None:
        while True:
            identity, message = await self._link.recv()
            try:
                await self.route(identity, message)
            except Exception:
                log.exception("handling a %s message failed", type(message).__name__)

    async def route(self, identity: bytes, message: m.Inbound) -> None:
        if isinstance(message, m.Hello):
            old = self._fleet.get(identity)
            if old is not None:
                await self._leases.disconnect(old, "said hello again")
            await self._attestor.on_hello(identity, message)
            return
        conn = self._fleet.get(identity)
        if conn is None:
            bye = m.Goodbye(
                reason="unknown connection: send Hello first", code=m.GoodbyeCode.HELLO_FIRST
            )
            await self._link.send(identity, bye)
            return
        conn.last_seen = self._clock.now()
        await self._route_known(conn, message)

    async def _route_known(self, conn: DriverConnection, message: m.Inbound) -> None:
        match message:
            case m.Evidence():
                await self._attestor.on_evidence(conn, message)
            case m.LeaseStarted():
                await self._leases.on_started(conn, message)
            case m.LeaseResult():
                await self._leases.on_result(conn, message)
            case m.LeaseFailure():
                await self._leases.on_failure(conn, message)
            case m.Goodbye():
                await self._leases.disconnect(conn, f"driver said goodbye: {message.reason}")
            case m.Heartbeat():
                self._metrics.heartbeats.labels(conn.device_id).inc()

    async def tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self._timing.tick_seconds)
            try:
                await self.tick()
            except Exception:
                log.exception("periodic maintenance failed; retrying next tick")

    async def tick(self) -> None:
        now = self._clock.now()
        silence = self._timing.heartbeat_seconds * self._timing.heartbeat_misses
        for conn in self._fleet:
            if now - conn.last_seen > silence:
                await self._leases.disconnect(conn, f"no heartbeat for {silence:.1f}s")
        self._beat += 1
        beat = m.Heartbeat(seq=self._beat)
        for conn in self._fleet:
            if not await self._link.send(conn.identity, beat):
                await self._leases.disconnect(conn, "unreachable")
        await self._attestor.maintain(now)
        await self._leases.reap(now)
        for device_id in self._fleet.device_ids():
            self._wakeups.kick(device_id)
        for tick in self._ticks:
            await tick()
