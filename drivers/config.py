"""Driver agent settings, read from TOML (one file per driver process).

The backend is chosen by name, `backend = "NAME"` at the top of the file or (as older files do)
in the `[device]` table, and made by the backend plugin of that name (`drivers.plugins`) from the
`[device]` table and its own `[backend_settings]` table. The device description the driver
announces and attests is what the plugin describes, not what the file says.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivers.device import DeviceDescription
from drivers.plugins.api import BackendPlugin
from drivers.plugins.registry import PluginError, load_backend

# The most leases a driver may ask to hold (the broker's own limit is usually lower).
MAX_LEASES = 64


class DriverConfigError(ValueError):
    """The driver's settings file is missing a key or has a bad value."""


@dataclass(frozen=True, kw_only=True, slots=True)
class DriverConfig:
    # The broker link endpoints (tcp://host:port): one service address, or every replica's.
    # The driver uses one at a time and moves to the next when its broker falls silent.
    brokers: tuple[str, ...]
    device_key: Path
    # The device certificate and any intermediates (PEM), presented to the broker in Hello.
    device_certificate: Path
    # CurveZMQ: this driver's link secret key and the broker's link public key.
    link_secret_key: Path
    broker_link_key: Path
    firmware: str
    # The backend plugin serving the device, and its description when the driver started.
    plugin: BackendPlugin = field(repr=False)
    device: DeviceDescription
    heartbeat_seconds: float = 1.0
    heartbeat_misses: int = 3
    # Simulated testbeds pad each run to at least this long, to behave like real hardware
    # whose shots take wall-clock time (demos, queueing studies, crash tests).
    min_execution_seconds: float = 0.0
    # Simulated testbeds only: each measured bit flips with this probability after the run,
    # modelling hardware that drifted away from its attested calibration (which the evidence
    # therefore does not show). The broker's canary circuits are what catch it.
    simulated_drift: float = 0.0
    # How often an idle driver asks its backend for the calibration; a changed one makes the
    # driver reconnect and attest again, so the broker re-appraises and re-classifies it.
    calibration_poll_seconds: float = 30.0
    # Leases to hold at once: more than 1 has the next job here when the device frees (the
    # broker grants at most its own [timing] max_leases_per_driver). Jobs still run one at a
    # time; every held lease's clock runs while it waits.
    max_leases: int = 1
    # Rewritten every heartbeat for `qtestbed probe driver` (drivers.status); None: not written.
    status_file: Path | None = None

    def __post_init__(self) -> None:
        if not self.brokers or not all(self.brokers):
            raise ValueError("broker must name at least one link endpoint (tcp://host:port)")
        if not 0.0 <= self.simulated_drift < 1.0:
            raise ValueError(f"simulated_drift must be in [0, 1), got {self.simulated_drift!r}")
        if not self.calibration_poll_seconds > 0:
            raise ValueError("calibration_poll_seconds must be > 0")
        if not 1 <= self.max_leases <= MAX_LEASES:
            raise ValueError(f"max_leases must be in [1, {MAX_LEASES}], got {self.max_leases!r}")


def load_driver_config(
    path: Path, *, broker: str | None = None, status_file: Path | None = None
) -> DriverConfig:
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise DriverConfigError(f"cannot read driver settings {path}: {exc}") from exc
    base = path.resolve().parent
    try:
        key = Path(str(raw["device_key"]))
        plugin = _plugin(raw, base)
        return DriverConfig(
            brokers=broker_endpoints(broker if broker is not None else raw["broker"]),
            device_key=key if key.is_absolute() else base / key,
            device_certificate=_relative(base, str(raw["device_certificate"])),
            link_secret_key=_relative(base, str(raw["link_secret_key"])),
            broker_link_key=_relative(base, str(raw["broker_link_key"])),
            firmware=str(raw["firmware"]),
            plugin=plugin,
            device=plugin.describe(),
            heartbeat_seconds=float(raw.get("heartbeat_seconds", 1.0)),
            heartbeat_misses=int(raw.get("heartbeat_misses", 3)),
            min_execution_seconds=float(raw.get("min_execution_seconds", 0.0)),
            simulated_drift=float(raw.get("simulated_drift", 0.0)),
            calibration_poll_seconds=float(raw.get("calibration_poll_seconds", 30.0)),
            max_leases=int(raw.get("max_leases", 1)),
            status_file=status_file or _optional(base, raw.get("status_file")),
        )
    except KeyError as exc:
        raise DriverConfigError(f"{path}: missing required key {exc.args[0]!r}") from exc
    except PluginError as exc:
        raise DriverConfigError(f"{path}: {exc}") from exc
    except ValueError as exc:
        raise DriverConfigError(f"{path}: {exc}") from exc


def broker_endpoints(value: object) -> tuple[str, ...]:
    """`broker` as written: one endpoint, several separated by commas, or a TOML list."""
    items = value if isinstance(value, list) else str(value).split(",")
    return tuple(str(item).strip() for item in items if str(item).strip())


def _relative(base: Path, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else base / path


def _plugin(raw: Mapping[str, Any], base: Path) -> BackendPlugin:
    """The backend plugin the file chooses, made from its [device] and [backend_settings]."""
    device = raw["device"]
    settings = raw.get("backend_settings", {})
    if not isinstance(device, dict) or not isinstance(settings, dict):
        raise ValueError("[device] and [backend_settings] must be tables")
    chosen = raw.get("backend", device.get("backend"))
    if not isinstance(chosen, str) or not chosen:
        raise ValueError('choose a backend: backend = "NAME" (an installed backend plugin)')
    if device.get("backend", chosen) != chosen:
        raise ValueError(f"backend = {chosen!r} but [device] says backend = {device['backend']!r}")
    device = {k: v for k, v in device.items() if k != "backend"}
    return load_backend(chosen, device, _resolved(settings, base))


def _resolved(settings: Mapping[str, Any], base: Path) -> dict[str, Any]:
    """Settings named `*_file`, `*_path` or `*_dir` are paths relative to the driver file, like
    the file's own keys."""
    paths = ("_file", "_path", "_dir")
    return {
        k: str(_relative(base, v)) if k.endswith(paths) and isinstance(v, str) else v
        for k, v in settings.items()
    }


def _optional(base: Path, value: object) -> Path | None:
    return None if value is None else _relative(base, str(value))
