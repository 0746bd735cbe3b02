"""Operator and security commands: device register|list|revoke|release|history (and, from
`qtestbed.cli.schedule`, state|maintenance|reserve|unschedule|schedule), reference set|list,
audit stream."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from qtestbed.cli import schedule
from qtestbed.cli.common import client_options, format_time, parse_time, read_input
from qtestbed.cli.errors import guarded
from qtestbed.cli.output import print_json, show
from qtestbed.cli.runner import broker_command, using_client
from qtestbed.client import Client
from qtestbed.v1 import admin_pb2


def register(sub: Any) -> None:
    device = sub.add_parser(
        "device", help="operator: register, revoke, release and schedule devices"
    ).add_subparsers(dest="device_command", required=True, metavar="ACTION")
    p = device.add_parser("register", help="register a device certificate (chain PEM)")
    p.add_argument("chain", type=Path, help="device certificate followed by any intermediates")
    p.add_argument("--tier", required=True, help="clearance tier needed to use the device")
    p.add_argument("--model", default="", help="device model (reference values may be per model)")
    client_options(p)
    p.set_defaults(handler=cmd_register)
    p = device.add_parser("list", help="registered devices with their security status")
    client_options(p)
    p.set_defaults(handler=cmd_list)
    for name, help_text, handler in (
        ("revoke", "revoke a device's certificate: it receives nothing more, at once", cmd_revoke),
        ("release", "release a quarantined device after it attested successfully", cmd_release),
    ):
        p = device.add_parser(name, help=help_text)
        p.add_argument("device_id")
        p.add_argument("--reason", default="", help="why (kept in the audit log)")
        client_options(p)
        p.set_defaults(handler=handler)
    p = device.add_parser("history", help="a device's attestation history, newest first")
    p.add_argument("device_id")
    p.add_argument("--limit", type=int, default=20)
    client_options(p)
    p.set_defaults(handler=cmd_history)
    schedule.register(device)
    _register_reference(sub)
    _register_audit_stream(sub)


def _register_reference(sub: Any) -> None:
    ref = sub.add_parser(
        "reference", help="operator: publish and list reference values"
    ).add_subparsers(dest="reference_command", required=True, metavar="ACTION")
    p = ref.add_parser("set", help="publish a new version of reference values")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--device", help="for this device id")
    target.add_argument("--model", help="for every device of this model")
    for field in ("firmware", "control-software", "driver-build", "calibration-digest"):
        p.add_argument(
            f"--{field}",
            action="append",
            required=True,
            help=f"an accepted {field.replace('-', ' ')} (repeat for several)",
        )
    p.add_argument("--num-qubits", type=int, required=True)
    p.add_argument("--not-before", help="ISO 8601 time from which this version is valid")
    p.add_argument("--not-after", help="ISO 8601 time at which this version stops being valid")
    for figure, what in _WINDOWS.items():
        p.add_argument(
            f"--{figure.replace('_', '-')}",
            type=calibration_window,
            metavar="MIN:MAX",
            help=f"accepted attested {what}; either side may be left empty. Evidence "
            "claiming a value outside, or none, is refused (CALIBRATION_OUT_OF_RANGE)",
        )
    client_options(p)
    p.set_defaults(handler=cmd_reference_set)
    p = ref.add_parser("list", help="every version, newest first")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--device")
    target.add_argument("--model")
    client_options(p)
    p.set_defaults(handler=cmd_reference_list)


def _register_audit_stream(sub: Any) -> None:
    audit = sub.choices.get("audit")
    if audit is None:
        audit = sub.add_parser("audit", help="security: the tamper-evident audit log")
        audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    actions = next(a for a in audit._actions if isinstance(a, argparse._SubParsersAction))
    p = actions.add_parser("stream", help="print audit entries from the broker (security role)")
    p.add_argument("--after", type=int, default=0, help="start after this sequence number")
    p.add_argument("--follow", action="store_true", help="keep printing new entries")
    client_options(p)
    p.set_defaults(handler=cmd_audit_stream)


def _device_line(d: admin_pb2.RegisteredDevice) -> str:
    status = admin_pb2.DeviceStatus.Name(d.status).removeprefix("DEVICE_STATUS_")
    line = f"{d.device_id:<18}{d.tier:<12}{status:<13}{d.model:<22}serial {d.serial[:16]}"
    return line + (f"\n  {d.status_reason}" if d.status_reason else "")


@guarded()
def cmd_register(args: argparse.Namespace) -> int:
    request = admin_pb2.RegisterDeviceRequest(
        certificate_chain_pem=read_input(args.chain), tier=args.tier, model=args.model
    )

    def register_device(c: Client) -> int:
        device = c.call(c.admin.RegisterDevice, request)
        show(device, as_json=args.json, text=_device_line(device))
        return 0

    return using_client(args, register_device)


@broker_command()
def cmd_list(args: argparse.Namespace, c: Client) -> int:
    reply = c.call(c.admin.ListRegisteredDevices, admin_pb2.ListRegisteredDevicesRequest())
    show(reply, as_json=args.json, text="\n".join(_device_line(d) for d in reply.devices))
    return 0


@broker_command()
def cmd_revoke(args: argparse.Namespace, c: Client) -> int:
    request = admin_pb2.RevokeDeviceRequest(device_id=args.device_id, reason=args.reason)
    device = c.call(c.admin.RevokeDevice, request)
    show(device, as_json=args.json, text=_device_line(device))
    return 0


@broker_command()
def cmd_release(args: argparse.Namespace, c: Client) -> int:
    request = admin_pb2.ReleaseDeviceRequest(device_id=args.device_id, reason=args.reason)
    device = c.call(c.admin.ReleaseDevice, request)
    show(device, as_json=args.json, text=_device_line(device))
    return 0


@broker_command()
def cmd_history(args: argparse.Namespace, c: Client) -> int:
    request = admin_pb2.GetAttestationHistoryRequest(device_id=args.device_id, limit=args.limit)
    reply = c.call(c.admin.GetAttestationHistory, request)
    lines = []
    for e in reply.events:
        lines.append(f"{format_time(e.at)}  {e.status:<16}{e.evidence_digest[:16]}")
        lines += [f"    {r}" for r in e.reasons]
    show(reply, as_json=args.json, text="\n".join(lines) or "no attestations yet")
    return 0


# The calibration figures reference values can bound (attestation.calibration), for --help.
_WINDOWS = {
    "two_qubit_error": "two-qubit gate error (a probability)",
    "readout_error": "readout error (a probability)",
    "t1_us": "T1 relaxation time (microseconds)",
    "t2_us": "T2 dephasing time (microseconds)",
}


def calibration_window(text: str) -> admin_pb2.CalibrationWindow:
    """MIN:MAX (either side may be empty) as a window; the broker checks the bounds further."""
    low, sep, high = text.partition(":")
    if not sep or not (low.strip() or high.strip()):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a window: write MIN:MAX, e.g. 1e-5:1e-3, or 0.9: or :0.05"
        )
    try:
        bounds = [float(b) if b.strip() else None for b in (low, high)]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: bounds must be numbers ({exc})") from exc
    return admin_pb2.CalibrationWindow(min=bounds[0], max=bounds[1])


def _timestamp(text: str | None) -> Timestamp | None:
    return parse_time(text) if text else None


def _scope(args: argparse.Namespace) -> tuple[admin_pb2.ReferenceScope.ValueType, str]:
    if args.device:
        return admin_pb2.REFERENCE_SCOPE_DEVICE, args.device
    return admin_pb2.REFERENCE_SCOPE_MODEL, args.model


@guarded()
def cmd_reference_set(args: argparse.Namespace) -> int:
    scope, scope_id = _scope(args)
    values = admin_pb2.ReferenceValues(
        scope=scope,
        scope_id=scope_id,
        firmware=args.firmware,
        control_software=args.control_software,
        driver_build=args.driver_build,
        calibration_digest=args.calibration_digest,
        num_qubits=args.num_qubits,
        not_before=_timestamp(args.not_before),  # a bad time is refused before connecting
        not_after=_timestamp(args.not_after),
        **{figure: getattr(args, figure) for figure in _WINDOWS},
    )

    def publish(c: Client) -> int:
        stored = c.call(
            c.admin.SetReferenceValues, admin_pb2.SetReferenceValuesRequest(values=values)
        )
        show(stored, as_json=args.json, text=f"{scope_id}: version {stored.version}")
        return 0

    return using_client(args, publish)


@broker_command()
def cmd_reference_list(args: argparse.Namespace, c: Client) -> int:
    scope, scope_id = _scope(args)
    request = admin_pb2.ListReferenceValuesRequest(scope=scope, scope_id=scope_id)
    reply = c.call(c.admin.ListReferenceValues, request)
    text = "\n".join(
        f"v{r.version} firmware={list(r.firmware)} qubits={r.num_qubits}{_windows_text(r)}"
        for r in reply.versions
    )
    show(reply, as_json=args.json, text=text or "no reference values")
    return 0


def _windows_text(values: admin_pb2.ReferenceValues) -> str:
    parts = []
    for figure in _WINDOWS:
        if values.HasField(figure):  # type: ignore[arg-type]  # the figure names are fields
            window: admin_pb2.CalibrationWindow = getattr(values, figure)
            low = f"{window.min:g}" if window.HasField("min") else ""
            high = f"{window.max:g}" if window.HasField("max") else ""
            parts.append(f" {figure}={low}:{high}")
    return "".join(parts)


@broker_command()
def cmd_audit_stream(args: argparse.Namespace, c: Client) -> int:
    request = admin_pb2.StreamAuditRequest(after_seq=args.after, follow=args.follow)
    for entry in c.stream(c.audit.StreamAudit, request):
        if args.json:
            print_json(entry, stream=True)
        else:
            print(
                f"{entry.seq:>7} {entry.kind:<22}{entry.actor:<14}{entry.subject:<34}"
                f"{entry.detail_json}",
                flush=True,
            )
    return 0
