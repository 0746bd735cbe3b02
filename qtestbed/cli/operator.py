"""Operator and security commands: device register|list|revoke|release|history (and, from
`qtestbed.cli.access`, state|maintenance|reserve|unschedule|schedule), reference set|list,
audit stream."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.timestamp_pb2 import Timestamp

from qtestbed.cli import access
from qtestbed.cli.common import client_options, fail, open_client, parse_time
from qtestbed.client import QtestbedError
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
    access.register_device_actions(device)
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


def _print(message: Any, as_json: bool, text: str) -> None:
    print(
        json.dumps(MessageToDict(message, preserving_proto_field_name=True), indent=2)
        if as_json
        else text
    )


def _device_line(d: admin_pb2.RegisteredDevice) -> str:
    status = admin_pb2.DeviceStatus.Name(d.status).removeprefix("DEVICE_STATUS_")
    line = f"{d.device_id:<18}{d.tier:<12}{status:<13}{d.model:<22}serial {d.serial[:16]}"
    return line + (f"\n  {d.status_reason}" if d.status_reason else "")


def _run(args: argparse.Namespace, body: Any) -> int:
    with open_client(args.profile) as client:
        try:
            body(client)
        except QtestbedError as exc:
            return fail(str(exc), code=1)
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    try:
        chain = args.chain.read_bytes()
    except OSError as exc:
        return fail(f"cannot read {args.chain}: {exc}")
    request = admin_pb2.RegisterDeviceRequest(
        certificate_chain_pem=chain, tier=args.tier, model=args.model
    )
    return _run(
        args,
        lambda c: (lambda d: _print(d, args.json, _device_line(d)))(
            c.call(c.admin.RegisterDevice, request)
        ),
    )


def cmd_list(args: argparse.Namespace) -> int:
    def body(c: Any) -> None:
        reply = c.call(c.admin.ListRegisteredDevices, admin_pb2.ListRegisteredDevicesRequest())
        _print(reply, args.json, "\n".join(_device_line(d) for d in reply.devices))

    return _run(args, body)


def cmd_revoke(args: argparse.Namespace) -> int:
    request = admin_pb2.RevokeDeviceRequest(device_id=args.device_id, reason=args.reason)
    return _run(
        args,
        lambda c: (lambda d: _print(d, args.json, _device_line(d)))(
            c.call(c.admin.RevokeDevice, request)
        ),
    )


def cmd_release(args: argparse.Namespace) -> int:
    request = admin_pb2.ReleaseDeviceRequest(device_id=args.device_id, reason=args.reason)
    return _run(
        args,
        lambda c: (lambda d: _print(d, args.json, _device_line(d)))(
            c.call(c.admin.ReleaseDevice, request)
        ),
    )


def cmd_history(args: argparse.Namespace) -> int:
    def body(c: Any) -> None:
        request = admin_pb2.GetAttestationHistoryRequest(device_id=args.device_id, limit=args.limit)
        reply = c.call(c.admin.GetAttestationHistory, request)
        lines = []
        for e in reply.events:
            when = e.at.ToDatetime(dt.UTC).isoformat(timespec="seconds")
            lines.append(f"{when}  {e.status:<16}{e.evidence_digest[:16]}")
            lines += [f"    {r}" for r in e.reasons]
        _print(reply, args.json, "\n".join(lines) or "no attestations yet")

    return _run(args, body)


def _timestamp(text: str | None) -> Timestamp | None:
    return parse_time(text) if text else None


def _scope(args: argparse.Namespace) -> tuple[admin_pb2.ReferenceScope.ValueType, str]:
    if args.device:
        return admin_pb2.REFERENCE_SCOPE_DEVICE, args.device
    return admin_pb2.REFERENCE_SCOPE_MODEL, args.model


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
        not_before=_timestamp(args.not_before),
        not_after=_timestamp(args.not_after),
    )
    request = admin_pb2.SetReferenceValuesRequest(values=values)
    return _run(
        args,
        lambda c: (lambda r: _print(r, args.json, f"{scope_id}: version {r.version}"))(
            c.call(c.admin.SetReferenceValues, request)
        ),
    )


def cmd_reference_list(args: argparse.Namespace) -> int:
    scope, scope_id = _scope(args)

    def body(c: Any) -> None:
        reply = c.call(
            c.admin.ListReferenceValues,
            admin_pb2.ListReferenceValuesRequest(scope=scope, scope_id=scope_id),
        )
        text = "\n".join(
            f"v{r.version} firmware={list(r.firmware)} qubits={r.num_qubits}"
            for r in reply.versions
        )
        _print(reply, args.json, text or "no reference values")

    return _run(args, body)


def cmd_audit_stream(args: argparse.Namespace) -> int:
    def body(c: Any) -> None:
        request = admin_pb2.StreamAuditRequest(after_seq=args.after, follow=args.follow)
        for entry in c.stream(c.audit.StreamAudit, request):
            if args.json:
                print(
                    json.dumps(MessageToDict(entry, preserving_proto_field_name=True)), flush=True
                )
            else:
                print(
                    f"{entry.seq:>7} {entry.kind:<22}{entry.actor:<14}{entry.subject:<34}"
                    f"{entry.detail_json}",
                    flush=True,
                )

    return _run(args, body)
