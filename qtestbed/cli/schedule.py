"""The operator's device schedule: `device state|maintenance|reserve|unschedule|schedule`
(ACTIONs of the `device` group that `qtestbed.cli.operator` creates)."""

from __future__ import annotations

import argparse
from typing import Any

from qtestbed.cli.common import client_options, format_time, parse_time
from qtestbed.cli.errors import CommandError, guarded
from qtestbed.cli.output import show
from qtestbed.cli.runner import broker_command, using_client
from qtestbed.client import Client
from qtestbed.v1 import access_pb2

STATES = ("online", "draining", "maintenance", "retired")
_LIST_DEVICES = "see 'qtestbed device list' for the registered devices"


def register(device: Any) -> None:
    """Operating states and schedules, as further ACTIONs of the operator's `device` group."""
    p = device.add_parser(
        "state", help="set a device's operating state (draining: runs its queue, takes no more)"
    )
    p.add_argument("device_id")
    p.add_argument("state", choices=STATES)
    p.add_argument("--reason", default="", help="why (shown to operators, kept in the audit log)")
    client_options(p)
    p.set_defaults(handler=cmd_device_state)
    _register_windows(device)
    p = device.add_parser("unschedule", help="remove a maintenance window or reservation")
    p.add_argument("device_id")
    p.add_argument("window_id", help="as shown by 'qtestbed device schedule'")
    client_options(p)
    p.set_defaults(handler=cmd_device_unschedule)
    p = device.add_parser("schedule", help="operating states, maintenance windows and reservations")
    p.add_argument("device_id", nargs="?", help="only this device")
    client_options(p)
    p.set_defaults(handler=cmd_device_schedule)


def _register_windows(device: Any) -> None:
    for name, help_text in (
        ("maintenance", "schedule a maintenance window: no jobs run on the device during it"),
        ("reserve", "reserve the device for one project's jobs during a window"),
    ):
        p = device.add_parser(name, help=help_text)
        p.add_argument("device_id")
        if name == "reserve":
            p.add_argument("--project", required=True, help="the project the device is for")
        p.add_argument(
            "--from",
            dest="starts",
            required=True,
            metavar="TIME",
            help="ISO 8601 time with zone when the window opens",
        )
        p.add_argument(
            "--until",
            dest="ends",
            required=True,
            metavar="TIME",
            help="ISO 8601 time with zone when it closes",
        )
        p.add_argument("--note", default="", help="shown next to the window")
        client_options(p)
        p.set_defaults(handler=cmd_device_window, kind=name)


def _state_name(state: access_pb2.OperatingState.ValueType) -> str:
    return access_pb2.OperatingState.Name(state).removeprefix("OPERATING_STATE_")


def _window_line(w: access_pb2.DeviceWindow) -> str:
    kind = access_pb2.WindowKind.Name(w.kind).removeprefix("WINDOW_KIND_")
    line = (
        f"  window {w.window_id}  {kind:<12}{format_time(w.starts_at)} -> {format_time(w.ends_at)}"
    )
    if w.project:
        line += f"  project {w.project}"
    if w.created_by:
        line += f"  by {w.created_by}"
    return line + (f"\n    {w.note}" if w.note else "")


def _operations_text(ops: access_pb2.DeviceOperations) -> str:
    state, effective = _state_name(ops.state), _state_name(ops.effective_state)
    line = f"{ops.device_id}: {state}"
    if effective != state:
        line += f" (now {effective})"
    if ops.reason:
        line += f" - {ops.reason}"
    ahead = sorted(ops.windows, key=lambda w: (w.starts_at.ToNanoseconds(), w.window_id))
    windows = [_window_line(w) for w in ahead] or ["  no maintenance or reservations ahead"]
    return "\n".join([line, *windows])


@broker_command({"NOT_FOUND": _LIST_DEVICES})
def cmd_device_state(args: argparse.Namespace, c: Client) -> int:
    request = access_pb2.SetDeviceStateRequest(
        device_id=args.device_id,
        state=access_pb2.OperatingState.Value(f"OPERATING_STATE_{args.state.upper()}"),
        reason=args.reason,
    )
    ops = c.call(c.access.SetDeviceState, request)
    show(ops, as_json=args.json, text=_operations_text(ops))
    return 0


@guarded({"NOT_FOUND": _LIST_DEVICES})
def cmd_device_window(args: argparse.Namespace) -> int:
    reservation = args.kind == "reserve"
    request = access_pb2.AddDeviceWindowRequest(
        device_id=args.device_id,
        kind=access_pb2.WINDOW_KIND_RESERVATION
        if reservation
        else access_pb2.WINDOW_KIND_MAINTENANCE,
        starts_at=parse_time(args.starts, "--from"),  # bad times: refused before connecting
        ends_at=parse_time(args.ends, "--until"),
        project=args.project if reservation else "",
        note=args.note,
    )
    return using_client(args, lambda c: _add_window(args, c, request))


def _add_window(
    args: argparse.Namespace, c: Client, request: access_pb2.AddDeviceWindowRequest
) -> int:
    ops = c.call(c.access.AddDeviceWindow, request)
    added = [
        w
        for w in ops.windows
        if (w.kind, w.starts_at, w.ends_at, w.project, w.note)
        == (request.kind, request.starts_at, request.ends_at, request.project, request.note)
    ]
    what = (
        "reservation"
        if request.kind == access_pb2.WINDOW_KIND_RESERVATION
        else "maintenance window"
    )
    head = f"added {what} {added[-1].window_id}" if added else f"added {what}"
    show(ops, as_json=args.json, text=f"{head}\n{_operations_text(ops)}")
    return 0


@broker_command({"NOT_FOUND": "see 'qtestbed device schedule {device_id}' for its windows"})
def cmd_device_unschedule(args: argparse.Namespace, c: Client) -> int:
    request = access_pb2.RemoveDeviceWindowRequest(
        device_id=args.device_id, window_id=args.window_id
    )
    ops = c.call(c.access.RemoveDeviceWindow, request)
    show(ops, as_json=args.json, text=f"removed window {args.window_id}\n{_operations_text(ops)}")
    return 0


@broker_command()
def cmd_device_schedule(args: argparse.Namespace, c: Client) -> int:
    reply = c.call(c.access.ListDeviceOperations, access_pb2.ListDeviceOperationsRequest())
    if args.device_id:
        chosen = [d for d in reply.devices if d.device_id == args.device_id]
        if not chosen:
            raise CommandError(f"device {args.device_id!r} is not registered; {_LIST_DEVICES}")
        del reply.devices[:]
        reply.devices.extend(chosen)
    text = "\n".join(_operations_text(d) for d in reply.devices)
    show(reply, as_json=args.json, text=text or "no devices registered")
    return 0
