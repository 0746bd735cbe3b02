"""Adding a device served by any backend plugin to a facility made by `qtestbed init`, before
the broker starts: its key and certificate (from the offline devices CA), its link key, its
driver file and its registry entry, with reference values measured from the plugin as installed
here (what the driver will attest to: its description, calibration and build).

Extra calibration digests can be accepted up front (a calibration the operator has reviewed
and expects the device to report later); calibration windows bound the figures it claims, and
only a bounded two-qubit error can take a device out of export control.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from attestation.keys import KeyKind, SigningKey, load_private_key
from attestation.pki import cert_from_pem, device_uri
from qtestbed.facility_init import FIRMWARE, Issuer, Writer, _toml_list
from qtestbed.shared.linkkeys import authorize_client, create_keypair

if TYPE_CHECKING:
    from drivers.config import DriverConfig
    from drivers.device import DeviceDescription


def add_device(
    root: Path,
    offline_ca: Path,
    *,
    device_id: str,
    tier: str,
    driver_tables: str,
    windows: Mapping[str, Sequence[float]] | None = None,
    extra_calibration_digests: Iterable[str] = (),
) -> DeviceDescription:
    """Register `device_id`, served by the backend that `driver_tables` (the driver file's
    `backend = ...`, `[device]` and `[backend_settings]`, as TOML) choose; returns what the
    plugin describes."""
    from drivers.config import load_driver_config

    _issue_identity(root, offline_ca, device_id)
    path = Writer(root, offline_ca).text(
        f"drivers/{device_id}.toml", _driver_file(root, device_id, driver_tables)
    )
    config = load_driver_config(path)
    register_device(
        root,
        config,
        tier=tier,
        windows=windows,
        extra_calibration_digests=extra_calibration_digests,
    )
    return config.device


def enroll_device(
    root: Path,
    offline_ca: Path,
    config: DriverConfig,
    *,
    tier: str,
    windows: Mapping[str, Sequence[float]] | None = None,
) -> None:
    """Give the device that `config` (driver settings loaded elsewhere) serves a key,
    certificate and link key in this facility, and register it with reference values measured
    from its plugin; the settings' own identity is not used."""
    _issue_identity(root, offline_ca, config.device.device_id)
    register_device(root, config, tier=tier, windows=windows)


def register_device(
    root: Path,
    config: DriverConfig,
    *,
    tier: str,
    windows: Mapping[str, Sequence[float]] | None = None,
    extra_calibration_digests: Iterable[str] = (),
) -> None:
    """Append the registry entry for the device `config` serves: reference values measured
    from the plugin it selects (control software and source as installed), its firmware."""
    from drivers.measure import measure
    from drivers.plugins.registry import plugin_source_root

    device_id = config.device.device_id
    m = measure(
        config.device,
        config.firmware,
        control_software=config.plugin.control_software,
        plugin_root=plugin_source_root(config.plugin),
    )
    entry = [
        "",
        "[[devices]]",
        f'device_id = "{device_id}"',
        f'tier = "{tier}"',
        f'model = "{config.device.backend}"',
        f'certificate = "devices/{device_id}.pem"',
        "[devices.reference]",
        f"firmware = {_toml_list([m.firmware])}",
        f"control_software = {_toml_list([m.control_software])}",
        f"driver_build = {_toml_list([m.driver_build])}",
        f"calibration_digest = {_toml_list([m.calibration_digest, *extra_calibration_digests])}",
        f"num_qubits = {m.num_qubits}",
    ]
    if windows:
        inner = ", ".join(
            f"{k} = [{', '.join(repr(float(b)) for b in v)}]" for k, v in windows.items()
        )
        entry.append(f"calibration = {{ {inner} }}")
    with open(root / "facility.toml", "a", encoding="utf-8") as facility:
        facility.write("\n".join(entry) + "\n")


def _issue_identity(root: Path, offline_ca: Path, device_id: str) -> None:
    """The device's key and certificate (from the offline devices CA) and its link key."""
    out = Writer(root, offline_ca)
    ca = offline_ca / "devices-ca"
    issuer = Issuer(
        load_private_key(ca.with_suffix(".key")),
        cert_from_pem(ca.with_suffix(".pem").read_bytes()),
        # Device certificates start a little in the past, as `init`'s do.
        dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5),
        intermediate=True,
    )
    key = SigningKey.generate(KeyKind.ED25519)
    out.key(f"devices/{device_id}.key", key)
    out.text(f"devices/{device_id}.pem", issuer.issue(device_id, key, uris=[device_uri(device_id)]))
    public, _secret = create_keypair(root / "drivers", f"{device_id}-link")
    authorize_client(public, root / "link" / "clients", device_id=device_id)


def _driver_file(root: Path, device_id: str, tables: str) -> str:
    broker = (root / "broker.toml").read_text().split("link_listen = ", 1)[1].split("\n", 1)[0]
    return "\n".join(
        [
            f"# Driver agent: qtestbed driver --config drivers/{device_id}.toml",
            f"broker = {broker}",
            f'device_key = "../devices/{device_id}.key"',
            f'device_certificate = "../devices/{device_id}.pem"',
            f'link_secret_key = "{device_id}-link.key_secret"',
            'broker_link_key = "../link/broker.key"',
            f'firmware = "{FIRMWARE}"',
            "heartbeat_seconds = 1.0",
            tables,
        ]
    )
