"""`qtestbed access ...`: just-in-time access through a second principal.

request (anyone, for themselves; approvers, operators and security for someone else), approve
and deny (approvers and security; break-glass: two security principals), list, revoke
(approvers, operators, security), through the broker's AccessRequestService. A grant expires by
itself; nobody decides their own request.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

from qtestbed.cli.common import client_options, format_time
from qtestbed.cli.output import show
from qtestbed.cli.runner import broker_command
from qtestbed.client import Client
from qtestbed.v1 import grants_pb2 as pb

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_KINDS = (
    ("tier", pb.ELEVATION_KIND_TIER, "a clearance tier above your record's"),
    ("role", pb.ELEVATION_KIND_ROLE, "operator, security or approver"),
    ("licence", pb.ELEVATION_KIND_LICENCE, "an export licence, e.g. EAR-4A906"),
    ("device", pb.ELEVATION_KIND_DEVICE, "one device above your tier"),
)
_KIND_NAMES = {kind: name for name, kind, _ in _KINDS}
_STATE_NAMES = {
    pb.ACCESS_REQUEST_STATE_PENDING: "pending",
    pb.ACCESS_REQUEST_STATE_GRANTED: "granted",
    pb.ACCESS_REQUEST_STATE_DENIED: "denied",
    pb.ACCESS_REQUEST_STATE_EXPIRED: "expired",
    pb.ACCESS_REQUEST_STATE_REVOKED: "revoked",
}
DECIDE_ADVICE = {"NOT_FOUND": "see 'qtestbed access list --all' for the request ids"}


def duration(text: str) -> float:
    """An argparse type: a duration such as 90m, 12h, 7d or 2w, in seconds."""
    found = _DURATION.match(text)
    if not found:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration; write a number and a unit (s, m, h, d, w), e.g. 7d"
        )
    return float(found.group(1)) * _UNITS[found.group(2)]


def register(sub: Any) -> None:
    group = sub.add_parser(
        "access",
        help="just-in-time access: request, approve, deny, list, revoke",
        description="A higher tier, a role, a licence or a device above your tier is asked "
        "for here and approved by another principal with the approver role; the grant expires "
        "by itself. Break-glass requests need two security principals.",
    ).add_subparsers(dest="access_command", required=True, metavar="ACTION")
    p = group.add_parser("request", help="ask for an elevation for a time, with a reason")
    what = p.add_mutually_exclusive_group(required=True)
    for name, _, help_text in _KINDS:
        what.add_argument(f"--{name}", metavar=name.upper(), help=help_text)
    p.add_argument("--principal", default="", help="for whom (default: you; staff only)")
    p.add_argument(
        "--for", dest="duration", type=duration, required=True, help="how long, e.g. 7d (max 90d)"
    )
    p.add_argument("--reason", required=True, help="why; the approver reads it")
    p.add_argument(
        "--break-glass",
        action="store_true",
        help="emergency: two security principals approve; lasts at most 1d",
    )
    client_options(p)
    p.set_defaults(handler=cmd_request)
    for name, help_text in (
        ("approve", "approver or security: approve someone else's request"),
        ("deny", "approver or security: deny someone else's request"),
        ("revoke", "approver, operator or security: end a grant before it expires"),
    ):
        p = group.add_parser(name, help=help_text)
        p.add_argument("request_id", metavar="ID", help="the request id, as 'access list' shows")
        p.add_argument(
            "--reason", default="", required=name != "approve", help="why (kept in the audit log)"
        )
        client_options(p)
        p.set_defaults(handler=cmd_decide, verb=name)
    p = group.add_parser("list", help="open requests and grants you may see")
    p.add_argument("--principal", default="", help="only requests for this principal")
    p.add_argument("--all", action="store_true", help="include closed ones")
    client_options(p)
    p.set_defaults(handler=cmd_list)


def describe(r: pb.AccessRequest) -> str:
    what = f"{_KIND_NAMES.get(r.kind, '?')} {r.value}"
    state = _STATE_NAMES.get(r.state, "?")
    line = f"{r.request_id}  {r.principal:<12} {what:<28} {state}"
    if r.state == pb.ACCESS_REQUEST_STATE_GRANTED and r.HasField("expires_at"):
        line += f" until {format_time(r.expires_at)}"
    if r.state == pb.ACCESS_REQUEST_STATE_PENDING:
        line += f" ({len(r.approvals)}/{2 if r.break_glass else 1} approvals)"
    if r.break_glass:
        line += " [break-glass]"
    return line


@broker_command()
def cmd_request(args: argparse.Namespace, c: Client) -> int:
    name, kind = next((n, k) for n, k, _ in _KINDS if getattr(args, n) is not None)
    message = pb.RequestAccessRequest(
        principal=args.principal,
        kind=kind,
        value=getattr(args, name),
        duration_seconds=args.duration,
        reason=args.reason,
        break_glass=args.break_glass,
    )
    filed = c.call(c.access_requests.RequestAccess, message)
    show(filed, as_json=args.json, text=f"filed {describe(filed)}")
    return 0


@broker_command(DECIDE_ADVICE)
def cmd_decide(args: argparse.Namespace, c: Client) -> int:
    stub = c.access_requests
    method = {"approve": stub.ApproveAccess, "deny": stub.DenyAccess, "revoke": stub.RevokeGrant}
    message = pb.DecideAccessRequest(request_id=args.request_id, reason=args.reason)
    decided = c.call(method[args.verb], message)
    show(decided, as_json=args.json, text=describe(decided))
    return 0


@broker_command()
def cmd_list(args: argparse.Namespace, c: Client) -> int:
    message = pb.ListAccessRequestsRequest(principal=args.principal, include_closed=args.all)
    reply = c.call(c.access_requests.ListAccessRequests, message)
    text = "\n".join(describe(r) for r in reply.requests) or "no access requests"
    show(reply, as_json=args.json, text=text)
    return 0
