"""What `qtestbed driver check` runs against: a throwaway facility made for the device a driver
settings file describes, and a copy of that file which keeps everything that selects and
configures the backend but takes its identity (device key and certificate, link keys, broker
address) from the throwaway facility.

The driver's own identity is never used: the check's broker is not the facility's, and the
device's keys stay where they are. What is checked is the driver code and the backend the
settings select, with the same settings loader the driver uses (an unreadable file fails here,
with the loader's own message). The copy is written beside the original, so that paths in the
backend's own tables resolve as they do for the driver, and removed afterwards.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from qtestbed.facility_devices import enroll_device
from qtestbed.facility_init import calibration_windows, init_facility
from qtestbed.offline_ca import default_offline_ca
from qtestbed.testing import LocalFacility

if TYPE_CHECKING:
    from drivers.config import DriverConfig


class CheckSetupError(Exception):
    """The settings file cannot be checked (unreadable, or the facility cannot be made)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class CheckSetup:
    config: DriverConfig  # as the driver loads it
    source: Path  # the driver settings file checked
    facility: LocalFacility  # the throwaway facility, its broker not yet started

    @property
    def device_id(self) -> str:
        return self.config.device.device_id

    def driver_settings(self, name: str, **overrides: float) -> Path:
        """A copy of the settings file, beside it, with the check's identity and `overrides`
        (top-level numbers such as min_execution_seconds); the caller removes it."""
        fac = self.facility.root
        values: dict[str, object] = {
            "broker": "tcp://127.0.0.1:1",  # replaced by --broker when the driver starts
            "device_key": str(fac / "devices" / f"{self.device_id}.key"),
            "device_certificate": str(fac / "devices" / f"{self.device_id}.pem"),
            "link_secret_key": str(fac / "drivers" / f"{self.device_id}-link.key_secret"),
            "broker_link_key": str(fac / "link" / "broker.key"),
            **overrides,
        }
        text = with_top_level(self.source.read_text(), values)
        unique = f".{self.source.stem}.check-{name}-{secrets.token_hex(4)}.toml"
        path = self.source.with_name(unique)
        path.write_text(text)
        return path


def prepare(source: Path, work: Path) -> CheckSetup:
    """Load `source` as the driver would and make a facility in `work` for its device."""
    from drivers.config import DriverConfigError, load_driver_config

    try:
        config = load_driver_config(source)
    except DriverConfigError as exc:
        raise CheckSetupError(str(exc)) from None
    root = work / "facility"
    try:
        init_facility(root, devices=[])
        # Reference values measured from the plugin the settings select, as installed here:
        # its control software and source, not the shipped simulators'.
        enroll_device(
            root,
            default_offline_ca(root),
            config,
            tier="open",
            windows=calibration_windows(config.device),
        )
    except (OSError, ValueError) as exc:
        detail = f"cannot make a facility for {config.device.device_id}: {exc}"
        raise CheckSetupError(detail) from None
    # The broker expects the driver's heartbeats as often as the driver's settings send them.
    timing = {
        "heartbeat_seconds": config.heartbeat_seconds,
        "heartbeat_misses": config.heartbeat_misses,
    }
    # The broker passes a circuit one qubit wider than the device, so that it is refused for the
    # device's size (what the too-large check is about), not by the broker's own limit.
    limits = {"limits": {"max_qubits": config.device.num_qubits + 1}}
    facility = LocalFacility(root, timing=timing, limits=limits)
    return CheckSetup(config=config, source=source.resolve(), facility=facility)


def with_top_level(text: str, values: dict[str, object]) -> str:
    """TOML `text` with each of `values` set as a top-level key (before the first table):
    an existing line for the key is replaced, a missing one added."""
    lines = text.splitlines()
    first_table = next((i for i, line in enumerate(lines) if line.lstrip().startswith("[")), None)
    head = lines if first_table is None else lines[:first_table]
    tail = [] if first_table is None else lines[first_table:]
    for key, value in values.items():
        rendered = f"{key} = {json.dumps(value)}"  # a JSON string or number is TOML too
        pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
        found = [i for i, line in enumerate(head) if pattern.match(line)]
        if found:
            head[found[0]] = rendered
        else:
            head.append(rendered)
    return "\n".join([*head, "", *tail]) + "\n"
