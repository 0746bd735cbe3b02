"""`qtestbed facility upgrade DIR`: bring a facility made before the issuing CAs up to date
(see `qtestbed.facility_upgrade`), and say what the operator does next."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from qtestbed.cli.errors import CommandError, guarded
from qtestbed.cli.output import show
from qtestbed.facility_upgrade import (
    AlreadyUpgraded,
    DeviceRegistration,
    UpgradeError,
    UpgradeReport,
    upgrade_facility,
)
from qtestbed.offline_ca import ca_keys_in, default_offline_ca, move_ca_keys_out


def register(sub: Any) -> None:
    group = sub.add_parser(
        "facility", help="maintain a facility folder made by 'qtestbed init'"
    ).add_subparsers(dest="facility_command", required=True, metavar="ACTION")
    p = group.add_parser(
        "upgrade",
        help="give a facility made before the issuing CAs its client- and device-issuing CAs",
        description="Run with the broker stopped, where the facility root key (ca/ca.key) is. "
        "Creates ca/clients-ca.* and ca/devices-ca.*, issues the certificates under users/ and "
        "devices/ again from them (same keys), adds client_ca_cert to broker.toml and the "
        "facility id to facility.toml, and keeps copies of the old files. The CA keys go to "
        "the offline CA folder (the root key is moved there from ca/): the broker refuses to "
        "start where it can read one. On a facility already upgraded it only moves any CA key "
        "left in ca/ out, and otherwise refuses.",
    )
    p.add_argument("dir", type=Path, help="the facility folder")
    p.add_argument(
        "--facility-id",
        help="the id that names principals in certificates (default: facility.toml's [facility] "
        "id, else the one the broker derived from the facility name)",
    )
    p.add_argument(
        "--offline-ca",
        type=Path,
        help="folder for the CA keys, outside DIR (default: DIR-offline-ca beside DIR); take it "
        "off the broker's machine",
    )
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(handler=cmd_upgrade)


@guarded()
def cmd_upgrade(args: argparse.Namespace) -> int:
    offline = args.offline_ca or default_offline_ca(args.dir)
    try:
        report = upgrade_facility(args.dir, facility_id=args.facility_id, offline_ca=offline)
    except AlreadyUpgraded as exc:
        if not ca_keys_in(args.dir):
            raise CommandError(f"facility not upgraded: {exc}") from exc
        return _move_ca_keys_only(args.dir, offline, as_json=args.json)
    except UpgradeError as exc:
        raise CommandError(f"facility not upgraded: {exc}") from exc
    show(_report_json(report), as_json=args.json, text=_report_text(report))
    return 0


def _move_ca_keys_only(root: Path, offline: Path, *, as_json: bool) -> int:
    """A facility with its issuing CAs, made when `init` still left the CA keys in ca/."""
    try:
        moved = move_ca_keys_out(root, offline)
    except (OSError, ValueError) as exc:
        raise CommandError(f"CA keys not moved: {exc}") from exc
    text = "\n".join(
        [
            f"facility {root} is upgraded already; moved its CA keys out of {root}/ca/:",
            *(f"  {path}" for path in moved),
            f"{_OFFLINE_ADVICE.format(offline=offline)}",
        ]
    )
    show({"offline_ca": str(offline), "moved": [str(p) for p in moved]}, as_json=as_json, text=text)
    return 0


_OFFLINE_ADVICE = (
    "Take {offline} off the broker's machine now: the broker needs none of it and refuses to "
    "start where it can read a CA key. Issue credentials where it is kept: "
    "qtestbed credential issue CSR --name NAME --ca-dir {offline} ..."
)


def _report_json(r: UpgradeReport) -> dict[str, object]:
    return {
        "facility_id": r.facility_id,
        "backup": str(r.backup),
        "offline_ca": str(r.offline_ca),
        "principals": [{"file": x.path, "name": x.name, "serial": x.serial} for x in r.principals],
        "devices": [{"file": x.path, "name": x.name, "serial": x.serial} for x in r.devices],
        "skipped": list(r.skipped),
        "register_devices": [_register_command(r, d) for d in r.registrations],
        "link_keys": [{"file": f, "device_id": d} for f, d in r.link_keys],
    }


def _register_command(r: UpgradeReport, d: DeviceRegistration) -> str:
    model = f" --model {d.model}" if d.model else ""
    return (
        f"qtestbed device register {d.certificate} --tier {d.tier}{model} "
        f"--profile {r.root}/users/OPERATOR.toml"
    )


def _link_keys_text(r: UpgradeReport) -> str:
    named = ", ".join(f"{f} -> {d}" for f, d in r.link_keys) or "none"
    return f"  driver link keys now authorised for one device each: {named}"


def _report_text(r: UpgradeReport) -> str:
    if r.link_keys_only:
        return "\n".join(
            [
                f"upgraded the driver link keys of {r.root}",
                f"  copies of the old files:  {r.backup}",
                _link_keys_text(r),
                *(f"  left as it was: {s}" for s in r.skipped),
                "Next: reload the broker (SIGHUP) or restart it; the drivers need no change.",
            ]
        )
    lines = [
        f"upgraded facility {r.root} (facility id {r.facility_id})",
        f"  copies of the old files:  {r.backup}",
        "  new issuing CAs:          ca/clients-ca.pem (principals), ca/devices-ca.pem (devices)",
        f"  CA keys (root and both):  {r.offline_ca}",
        f"  principals issued again:  {', '.join(x.name for x in r.principals) or 'none'}",
        f"  devices issued again:     {', '.join(x.name for x in r.devices) or 'none'}",
        _link_keys_text(r),
        *(f"  left as it was: {s}" for s in r.skipped),
        "The old certificates no longer work; the new ones are in place (same keys, same "
        "profiles). Next:",
        f"  1. start the broker: qtestbed broker --config {r.root}/broker.toml",
        "  2. as an operator, register each device's new certificate before restarting its "
        "driver (the broker knows a device by its certificate; check the tier against "
        "'qtestbed device list'):",
        *(f"       {_register_command(r, d)}" for d in r.registrations),
        "  3. restart the drivers",
        f"  4. {_OFFLINE_ADVICE.format(offline=r.offline_ca)}",
    ]
    return "\n".join(lines)
