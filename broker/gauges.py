"""Gauges that describe the facility now rather than count events: queue depth per device,
devices by security status and attestation, device utilization. Refreshed on the tick.

Per-device event counters are exported at 0 before their first event, so that alerting on
`increase()` sees the first quarantine or anomaly of a device too.
"""

from __future__ import annotations

from broker.anomaly.detectors import DEVICE_DETECTORS
from broker.clock import Clock
from broker.devices.model import DeviceStatus
from broker.devices.registry import DeviceRegistry
from broker.jobs.usage import UsageTracker
from broker.link.fleet import Fleet
from broker.metrics import BrokerMetrics
from broker.store.runner import StoreRunner


class DeviceGauges:
    def __init__(
        self,
        *,
        runner: StoreRunner,
        registry: DeviceRegistry,
        fleet: Fleet,
        usage: UsageTracker,
        clock: Clock,
        metrics: BrokerMetrics,
    ) -> None:
        self._runner = runner
        self._registry = registry
        self._fleet = fleet
        self._usage = usage
        self._clock = clock
        self._metrics = metrics
        self._zeroed: set[str] = set()

    async def refresh(self) -> None:
        depths = await self._runner.call(self._runner.store.queue_depths)
        now = self._clock.now()
        devices = list(self._registry.all())
        states: dict[tuple[str, str], int] = {}
        for device in devices:
            self._metrics.queue_depth.labels(device.device_id).set(depths.get(device.device_id, 0))
            self._zero_series(device.device_id)
            attested = "yes" if self._fleet.attested(device.device_id, now) else "no"
            key = (device.status.value, attested)
            states[key] = states.get(key, 0) + 1
        for status in DeviceStatus:
            for attested in ("yes", "no"):
                count = states.get((status.value, attested), 0)
                self._metrics.device_states.labels(status.value, attested).set(count)
        running = [job for c in self._fleet for job in c.job_leases()]
        self._usage.refresh(now, [d.device_id for d in devices], running)

    def _zero_series(self, device_id: str) -> None:
        if device_id in self._zeroed:
            return
        self._zeroed.add(device_id)
        m = self._metrics
        m.quarantines.labels(device_id)
        m.revocations.labels(device_id)
        m.nonce_replays.labels(device_id)
        for detector in DEVICE_DETECTORS:
            m.anomalies.labels(detector, device_id)
