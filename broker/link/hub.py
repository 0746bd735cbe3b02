"""Runs the driver link: routes each incoming message to the attestor or the lease keeper, and
on a fixed tick sends heartbeats, drops silent drivers, refreshes attestations, reaps leases
and runs the broker's other periodic work.

A message belongs to the connection of the peer that sent it (link key and connection number).
A new connection that arrives on a routing id an older one holds took that route over: the old
connection is gone (ZeroMQ gives a routing id to one live peer only), so it is dropped; the
newcomer inherits nothing, and when its key is another key it is refused and counted."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence

from broker.clock import Clock
from broker.jobs.wakeups import DispatchWakeups
from broker.link import messages as m
from broker.link.admission import HelloAdmission
from broker.link.attestor import Attestor
from broker.link.door import LinkDoor, LinkRefusal
from broker.link.fleet import DriverConnection, Fleet
from broker.link.lanes import LeaseLanes
from broker.link.leases import LeaseKeeper
from broker.link.peer import Peer
from broker.link.port import LinkPort
from broker.metrics import BrokerMetrics
from broker.settings import TimingSettings
from broker.store import StoreError

log = logging.getLogger(__name__)

Tick = Callable[[], Awaitable[None]]

# Lease messages handled side by side at most (past it, in line): a few per pipelined driver.
_LANES = 256


def _lease_of(message: m.Inbound) -> str:
    """The lease a message is about; empty for messages about the connection."""
    if isinstance(message, m.LeaseStarted | m.LeaseResult | m.LeaseFailure):
        return message.lease_id
    return ""


class DriverHub:
    def __init__(
        self,
        *,
        link: LinkPort,
        fleet: Fleet,
        attestor: Attestor,
        leases: LeaseKeeper,
        admission: HelloAdmission,
        door: LinkDoor,
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
        self._admission = admission
        self._door = door
        self._clock = clock
        self._metrics = metrics
        self._timing = timing
        self._wakeups = wakeups
        self._ticks = tuple(ticks)  # the broker's other periodic work, after the link's own
        self._lanes = LeaseLanes(limit=_LANES)
        self._beat = 0

    async def receive_forever(self) -> None:
        while True:
            peer, message = await self._link.recv()
            lease_id = _lease_of(message)
            conn = self._fleet.get(peer) if lease_id else None
            if conn is not None and lease_id in conn.leases:
                # A lease this connection holds: beside the other leases' messages, after
                # this lease's earlier ones (see broker.link.lanes).
                await self._lanes.submit(
                    (peer, lease_id), functools.partial(self.route, peer, message)
                )
            else:
                try:
                    await self.route(peer, message)
                except Exception:
                    log.exception("handling a %s message failed", type(message).__name__)
            # A receive that finds a message waiting completes without suspending: yield, so
            # that a flood on the link cannot starve the gRPC edge or the tick of the loop.
            await asyncio.sleep(0)

    async def route(self, peer: Peer, message: m.Inbound) -> None:
        if not await self._route_is_its_own(peer):
            return
        if isinstance(message, m.Hello):
            await self._hello(peer, message)
            return
        conn = self._fleet.get(peer)
        if conn is None:
            self._door.refused(LinkRefusal.HELLO_FIRST, peer.device_id)
            bye = m.Goodbye(
                reason="unknown connection: send Hello first", code=m.GoodbyeCode.HELLO_FIRST
            )
            await self._link.send(peer, bye)
            return
        conn.last_seen = self._clock.now()
        await self._route_known(conn, message)

    async def _route_is_its_own(self, peer: Peer) -> bool:
        """Drop a stale connection whose routing id `peer` now has; False (refused, counted)
        when the newcomer's key is another key."""
        holder = self._fleet.on_route(peer.route)
        if holder is None or holder.peer == peer:
            return True
        await self._leases.disconnect(holder, "a new connection took over its routing id")
        if holder.peer.key == peer.key:
            return True  # the same driver reconnected with a routing id of its choosing
        self._door.refused(LinkRefusal.ROUTE_TAKEN, peer.device_id)
        bye = m.Goodbye(
            code=m.GoodbyeCode.WRONG_KEY,
            reason="this routing id belonged to another driver's connection; reconnect "
            "without setting a routing id",
        )
        await self._link.send(peer, bye)
        return False

    async def _hello(self, peer: Peer, hello: m.Hello) -> None:
        old = self._fleet.get(peer)
        if old is not None:
            await self._leases.disconnect(old, "said hello again")
        others = len(self._fleet.for_key(peer.key))
        refused = self._admission.admit(peer, hello, others)
        if refused is not None:
            self._door.refused(refused.reason, peer.device_id)
            await self._link.send(peer, refused.goodbye)
            return
        await self._attestor.on_hello(peer, hello)

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
            except StoreError:
                pass  # the store's health logs an outage once; the next tick tries again
            except Exception:
                log.exception("periodic maintenance failed; retrying next tick")

    async def tick(self) -> None:
        self._door.socket_refusals(self._link.take_refusals())
        now = self._clock.now()
        # Heartbeats first, from memory alone: during a store outage the drivers keep hearing
        # the broker, so they do not reconnect and drop the jobs they are running.
        self._beat += 1
        beat = m.Heartbeat(seq=self._beat)
        unreachable = [c for c in self._fleet if not await self._link.send(c.peer, beat)]
        silence = self._timing.heartbeat_seconds * self._timing.heartbeat_misses
        for conn in self._fleet:
            if conn in unreachable:
                await self._leases.disconnect(conn, "unreachable")
            elif now - conn.last_seen > silence:
                await self._leases.disconnect(conn, f"no heartbeat for {silence:.1f}s")
        await self._door.flush()
        await self._attestor.maintain(now)
        await self._leases.reap(now)
        for device_id in self._fleet.device_ids():
            self._wakeups.kick(device_id)
        for tick in self._ticks:
            await tick()
