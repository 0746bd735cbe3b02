"""The link-key part of `qtestbed facility upgrade`: each authorised driver key in link/clients
gets the device id it may speak for (`device-id` metadata), which today's broker requires.

Before, an authorised key let a driver speak for any device; the broker now takes the device
from the key. Which device a key is for is read from the facility's own driver settings
(drivers/*.toml: `link_secret_key` and `[device] device_id`); a key no driver settings file names
is left as it was and reported, since guessing would authorise the wrong device.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from qtestbed.shared.linkkeys import (
    LinkKeyError,
    authorise_device,
    authorised_device,
    load_public,
)


@dataclass(frozen=True, kw_only=True, slots=True)
class LinkKeyPlan:
    """What the upgrade does to link/clients: (file, device id) to authorise, and skipped."""

    authorise: tuple[tuple[Path, str], ...]
    skipped: tuple[str, ...]


def _drivers(root: Path) -> dict[bytes, str]:
    """Z85 public key -> device id, from the facility's driver settings files."""
    found: dict[bytes, str] = {}
    for path in sorted((root / "drivers").glob("*.toml")):
        try:
            doc = tomllib.loads(path.read_text())
            device_id = str(doc["device"]["device_id"])
            secret = path.parent / str(doc["link_secret_key"])
            found[load_public(secret)] = device_id
        except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError, LinkKeyError):
            continue
    return found


def plan_link_keys(root: Path) -> LinkKeyPlan:
    """The authorised keys in `root`/link/clients that name no device, and the device each is
    for; nothing is written."""
    clients = root / "link" / "clients"
    drivers = _drivers(root)
    authorise: list[tuple[Path, str]] = []
    skipped: list[str] = []
    for path in sorted(clients.glob("*.key")) if clients.is_dir() else []:
        try:
            if authorised_device(path) is not None:
                continue
            device_id = drivers.get(load_public(path))
        except LinkKeyError as exc:
            skipped.append(f"link/clients/{path.name}: {exc}")
            continue
        if device_id is None:
            skipped.append(
                f"link/clients/{path.name}: no drivers/*.toml uses this key, so the device it "
                "is for is unknown; it authorises nothing until it is authorised again for one "
                "device"
            )
        else:
            authorise.append((path, device_id))
    return LinkKeyPlan(authorise=tuple(authorise), skipped=tuple(skipped))


def apply_link_keys(plan: LinkKeyPlan) -> None:
    for path, device_id in plan.authorise:
        authorise_device(path, device_id)
