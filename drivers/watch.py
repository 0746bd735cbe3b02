"""Between jobs, the driver asks its backend how the device is: a new calibration, or a device
that reports itself unhealthy, ends the connection. The driver then says Hello again with the
new description and attests it, so the broker appraises the new calibration (its digest must
be among the reference values) and classifies the device by it before giving it more work; an
unhealthy device stays away until it is healthy again."""

from __future__ import annotations

import asyncio
import logging
import time

from drivers.device import DeviceDescription
from drivers.plugins.api import BackendPlugin, Health

log = logging.getLogger(__name__)


class DeviceWatch:
    """The description the driver announced, and when to look at the device again."""

    def __init__(
        self, plugin: BackendPlugin, description: DeviceDescription, poll_seconds: float
    ) -> None:
        self.plugin = plugin
        self.description = description
        self._poll_seconds = poll_seconds
        self._next_poll = time.monotonic() + poll_seconds

    async def reason_to_reconnect(self) -> str | None:
        """Why the connection must end (calibration changed, device unhealthy), or None; asks
        the backend at most once per poll interval (in a thread: it may call the hardware)."""
        now = time.monotonic()
        if now < self._next_poll:
            return None
        self._next_poll = now + self._poll_seconds
        health = await self._health()
        if not health.ok:
            return f"device unhealthy: {health.detail or 'no detail given'}"
        try:
            current = await asyncio.to_thread(self.plugin.describe)
        except Exception as exc:  # a plugin's fault must not stop the driver
            return f"device unhealthy: describe() failed: {exc}"
        if current.device_id != self.description.device_id:
            return None  # a backend cannot become another device; keep the attested one
        if current.calibration_digest() == self.description.calibration_digest():
            return None
        old = self.description.calibration_digest()[:12]
        self.description = current
        return f"calibration changed ({old}... -> {current.calibration_digest()[:12]}...)"

    async def wait_healthy(self, stop: asyncio.Event) -> None:
        """Return once the backend reports itself healthy (or the driver is stopping)."""
        while not stop.is_set():
            health = await self._health()
            if health.ok:
                return
            log.warning("device unhealthy, not connecting: %s", health.detail)
            try:
                await asyncio.wait_for(stop.wait(), timeout=self._poll_seconds)
            except TimeoutError:
                continue

    async def _health(self) -> Health:
        """The plugin's health; an exception from it is an unhealthy device, not a crash."""
        try:
            return await asyncio.to_thread(self.plugin.health)
        except Exception as exc:
            return Health(ok=False, detail=f"health() failed: {exc}")
