"""Session commands: `qtestbed session open|show|close|list` (researchers: their own;
operators: every session, and they may close any)."""

from __future__ import annotations

import argparse
from typing import Any

from qtestbed.cli.common import client_options, format_time
from qtestbed.cli.output import show
from qtestbed.cli.runner import broker_command
from qtestbed.client import Client
from qtestbed.v1 import jobs_pb2


def register(sub: Any) -> None:
    actions = sub.add_parser(
        "session", help="hold a device for back-to-back jobs (iterative algorithms)"
    ).add_subparsers(dest="session_command", required=True, metavar="ACTION")
    p = actions.add_parser("open", help="open a session on a device; prints its id")
    p.add_argument("device_id")
    p.add_argument("--project", default="", help="project (if you have several)")
    p.add_argument(
        "--max-seconds", type=float, default=0.0, help="shorter than the facility's maximum"
    )
    client_options(p)
    p.set_defaults(handler=cmd_open)
    p = actions.add_parser("show", help="one session")
    p.add_argument("session_id")
    client_options(p)
    p.set_defaults(handler=cmd_show)
    p = actions.add_parser("close", help="close a session (yours; operators: any)")
    p.add_argument("session_id")
    p.add_argument("--reason", default="", help="kept in the audit log")
    client_options(p)
    p.set_defaults(handler=cmd_close)
    p = actions.add_parser("list", help="open sessions (yours; operators: all)")
    p.add_argument("--device", default="", help="only this device")
    p.add_argument("--all", action="store_true", help="include closed sessions")
    client_options(p)
    p.set_defaults(handler=cmd_list)


def describe(s: jobs_pb2.Session) -> str:
    state = jobs_pb2.SessionState.Name(s.state).removeprefix("SESSION_STATE_")
    line = (
        f"{s.session_id}  {state:<6} device={s.device_id} owner={s.owner} project={s.project}"
        f" jobs={s.jobs}"
    )
    if s.state == jobs_pb2.SESSION_STATE_OPEN:
        line += (
            f"\n  closes at {format_time(s.closes_at)} at the latest, or after "
            f"{s.idle_timeout_seconds:.0f} s idle"
        )
    else:
        line += f"\n  closed {format_time(s.closed_at)}: {s.closed_reason}"
    return line


@broker_command()
def cmd_open(args: argparse.Namespace, client: Client) -> int:
    session = client.open_session(
        args.device_id, project=args.project, max_seconds=args.max_seconds
    )
    show(session, as_json=args.json, text=describe(session))
    return 0


@broker_command()
def cmd_show(args: argparse.Namespace, client: Client) -> int:
    session = client.session(args.session_id)
    show(session, as_json=args.json, text=describe(session))
    return 0


@broker_command()
def cmd_close(args: argparse.Namespace, client: Client) -> int:
    session = client.close_session(args.session_id, args.reason)
    show(session, as_json=args.json, text=describe(session))
    return 0


@broker_command()
def cmd_list(args: argparse.Namespace, client: Client) -> int:
    found = client.sessions(device_id=args.device, include_closed=args.all)
    text = "\n".join(describe(s) for s in found) or "no sessions"
    show(found, as_json=args.json, text=text)
    return 0
