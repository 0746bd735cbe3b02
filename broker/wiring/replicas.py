"""Keeping this broker's in-memory views in step with what other replicas commit to a shared
PostgreSQL store: the scheduler's queues, the access snapshot and the device registry.

Changes arrive as notifications (`broker.store.pg_events`) and are applied on the event loop
within milliseconds, coalesced: a burst of job changes on one device costs one re-read of that
device's queue. Polling is the fallback: every tick while the listener is down (and always on
a store no other process shares, where it finds nothing), every `replica_poll_seconds` while
it listens, in case a notification was lost. Decisions that must hold on committed state (the
dispatch gate, the edge's revocation check) read the store themselves; this only makes every
other view current fast.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from broker.access.records import AccessRecords
from broker.clock import Clock
from broker.devices.admin import Connections
from broker.devices.registry import DeviceRegistry
from broker.jobs.ledger import JobLedger
from broker.jobs.scheduler import Scheduler
from broker.jobs.wakeups import DispatchWakeups
from broker.store.changes import ACCESS, DEVICES, Change

log = logging.getLogger(__name__)


class ReplicaSync:
    def __init__(
        self,
        *,
        scheduler: Scheduler,
        records: AccessRecords,
        registry: DeviceRegistry,
        connections: Connections,
        wakeups: DispatchWakeups,
        ledger: JobLedger,
        clock: Clock,
        poll_seconds: float,
    ) -> None:
        self._scheduler = scheduler
        self._records = records
        self._registry = registry
        self._connections = connections
        self._wakeups = wakeups
        self._ledger = ledger
        self._clock = clock
        self._poll_seconds = poll_seconds
        self._topics: set[str] = set()
        self._devices: set[str] = set()
        self._everything = False
        self._wake = asyncio.Event()
        self._last_poll = float("-inf")
        self._dropped: frozenset[str] = frozenset()
        # Set when a listener runs: True while it hears every change.
        self.listening: Callable[[], bool] = lambda: False

    # --- told by the listener (on the event loop) ---------------------------------------------

    def heard(self, change: Change) -> None:
        if not change.device_id:
            self._topics.add(change.topic)
        elif self._registry.get(change.device_id) is not None:
            self._devices.add(change.device_id)
        else:
            # A device this replica does not know yet (or a payload anyone connected to the
            # database could send): one registry check, never a set that grows per payload.
            self._topics.add(DEVICES)
        self._wake.set()

    def gap(self) -> None:
        """Changes may have been missed (the listener (re)connected): re-read everything."""
        self._everything = True
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._apply()
            except Exception:
                log.exception("applying other replicas' changes failed; the next poll retries")

    async def _apply(self) -> None:
        topics, self._topics = self._topics, set()
        devices, self._devices = self._devices, set()
        everything, self._everything = self._everything, False
        if everything:
            await self._reread_all()
            return
        if DEVICES in topics:
            await self._registry_changed()
        if ACCESS in topics:
            await self._records.refresh()  # a reload kicks every device itself
        if devices:
            await self._queues_changed(devices)

    # --- the fallback (on the broker's tick) --------------------------------------------------

    async def poll(self) -> None:
        now = self._clock.now()
        if self.listening() and now - self._last_poll < self._poll_seconds:
            return
        self._last_poll = now
        await self._reread_all()

    async def _reread_all(self) -> None:
        await self._registry_changed()
        await self._records.refresh()
        await self._queues_changed(d.device_id for d in self._registry.all())

    async def _queues_changed(self, device_ids: Iterable[str]) -> None:
        wanted = list(device_ids)
        await self._scheduler.sync()  # lanes whose extent moved in the store are read again
        for device_id in wanted:
            self._wakeups.kick(device_id)
        for device_id in wanted:  # WatchJob streams here on jobs another process moved
            await self._ledger.written_elsewhere(device_id)

    async def _registry_changed(self) -> None:
        changed = await self._registry.refresh()
        # A device revoked through another replica: its connections here go too (whichever
        # path re-read the registry, the dispatch gate's included).
        revoked = self._registry.revoked_devices()
        newly = revoked - self._dropped
        for device_id in sorted(newly):
            await self._connections.drop_device(device_id, "device certificate revoked")
        self._dropped = revoked
        if changed or newly:
            # A released quarantine moves its queue; a device new here may have jobs already.
            await self._queues_changed(d.device_id for d in self._registry.all())
