"""Between jobs the driver asks its backend how the device is: a new calibration or an unhealthy
device ends the connection (so the driver attests again), and a plugin whose checks raise is an
unhealthy device, never a crashed driver."""

from __future__ import annotations

import asyncio
import dataclasses

from drivers.device import DeviceDescription
from drivers.plugins.api import Health
from drivers.plugins.registry import load_backend
from drivers.watch import DeviceWatch

TABLE = {"device_id": "s", "num_qubits": 2, "basis_gates": ["cx"], "coupling_map": []}


class Changing:
    """A shipped simulator whose calibration and health the test sets."""

    def __init__(self) -> None:
        self.inner = load_backend("aer", TABLE, {})
        self.description = self.inner.describe()
        self.health_result: Health | Exception = Health(ok=True)
        self.describe_error: Exception | None = None

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def describe(self) -> DeviceDescription:
        if self.describe_error is not None:
            raise self.describe_error
        return self.description

    def health(self) -> Health:
        if isinstance(self.health_result, Exception):
            raise self.health_result
        return self.health_result


def check(watch: DeviceWatch) -> str | None:
    return asyncio.run(watch.reason_to_reconnect())


def test_a_new_calibration_is_a_reason_to_attest_again() -> None:
    plugin = Changing()
    watch = DeviceWatch(plugin, plugin.description, poll_seconds=1e-6)  # type: ignore[arg-type]
    assert check(watch) is None
    plugin.description = dataclasses.replace(plugin.description, execution="exact")
    reason = check(watch)
    assert reason is not None
    assert reason.startswith("calibration changed")
    assert watch.description == plugin.description
    assert check(watch) is None  # attested now: no second reconnect


def test_an_unhealthy_device_or_a_raising_plugin_ends_the_connection() -> None:
    plugin = Changing()
    watch = DeviceWatch(plugin, plugin.description, poll_seconds=1e-6)  # type: ignore[arg-type]
    plugin.health_result = Health(ok=False, detail="cryostat warming")
    assert check(watch) == "device unhealthy: cryostat warming"
    plugin.health_result = RuntimeError("controller unreachable")
    assert check(watch) == "device unhealthy: health() failed: controller unreachable"
    plugin.health_result = Health(ok=True)
    plugin.describe_error = RuntimeError("calibration store offline")
    assert check(watch) == "device unhealthy: describe() failed: calibration store offline"


def test_the_backend_is_asked_at_most_once_per_poll_interval() -> None:
    plugin = Changing()
    watch = DeviceWatch(plugin, plugin.description, poll_seconds=3600)  # type: ignore[arg-type]
    plugin.health_result = Health(ok=False, detail="down")
    assert check(watch) is None  # the first poll is an interval after the start
