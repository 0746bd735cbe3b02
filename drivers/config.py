"""Driver agent settings, read from TOML (one file per driver process)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from drivers.device import DeviceDescription

# The most leases a driver may ask to hold (the broker's own limit is usually lower).
MAX_LEASES = 64


class DriverConfigError(ValueError):
    """The driver's settings file is missing a key or has a bad value."""


@dataclass(frozen=True, kw_only=True, slots=True)
class DriverConfig:
    broker: str
    device_key: Path
    # The device certificate and any intermediates (PEM), presented to the broker in Hello.
    device_certificate: Path
    # CurveZMQ: this driver's link secret key and the broker's link public key.
    link_secret_key: Path
    broker_link_key: Path
    firmware: str
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
    # Leases to hold at once: more than 1 has the next job here when the device frees (the
    # broker grants at most its own [timing] max_leases_per_driver). Jobs still run one at a
    # time; every held lease's clock runs while it waits.
    max_leases: int = 1
    # Rewritten every heartbeat for `qtestbed probe driver` (drivers.status); None: not written.
    status_file: Path | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.simulated_drift < 1.0:
            raise ValueError(f"simulated_drift must be in [0, 1), got {self.simulated_drift!r}")
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
        return DriverConfig(
            broker=broker or str(raw["broker"]),
            device_key=key if key.is_absolute() else base / key,
            device_certificate=_relative(base, str(raw["device_certificate"])),
            link_secret_key=_relative(base, str(raw["link_secret_key"])),
            broker_link_key=_relative(base, str(raw["broker_link_key"])),
            firmware=str(raw["firmware"]),
            device=DeviceDescription.from_dict(raw["device"]),
            heartbeat_seconds=float(raw.get("heartbeat_seconds", 1.0)),
            heartbeat_misses=int(raw.get("heartbeat_misses", 3)),
            min_execution_seconds=float(raw.get("min_execution_seconds", 0.0)),
            simulated_drift=float(raw.get("simulated_drift", 0.0)),
            max_leases=int(raw.get("max_leases", 1)),
            status_file=status_file or _optional(base, raw.get("status_file")),
        )
    except KeyError as exc:
        raise DriverConfigError(f"{path}: missing required key {exc.args[0]!r}") from exc
    except ValueError as exc:
        raise DriverConfigError(f"{path}: {exc}") from exc


def _relative(base: Path, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else base / path


def _optional(base: Path, value: object) -> Path | None:
    return None if value is None else _relative(base, str(value))
