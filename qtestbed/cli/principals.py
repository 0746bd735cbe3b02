"""The operator's `principal list|show|set|remove`: who may use the facility, with their
clearance, training, licences, projects and quota."""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Mapping
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from qtestbed.cli import principal_changes as changes
from qtestbed.cli.common import client_options, format_time, parse_time
from qtestbed.cli.errors import CommandError, guarded
from qtestbed.cli.output import show
from qtestbed.cli.projects import limit_text, meta_text
from qtestbed.cli.runner import broker_command, using_client
from qtestbed.client import Client, QtestbedError
from qtestbed.v1 import access_pb2

LIST_PRINCIPALS = {"NOT_FOUND": "see 'qtestbed principal list' for the principals on record"}


def register(sub: Any) -> None:
    principal = sub.add_parser(
        "principal", help="operator: who may use the facility (clearance, training, quota)"
    ).add_subparsers(dest="principal_command", required=True, metavar="ACTION")
    p = principal.add_parser("list", help="every principal on record")
    client_options(p)
    p.set_defaults(handler=cmd_principal_list)
    p = principal.add_parser("show", help="one principal with every field and its version")
    p.add_argument("name", help="the common name of the principal's client certificate")
    client_options(p)
    p.set_defaults(handler=cmd_principal_show)
    p = principal.add_parser(
        "set",
        help="create a principal or change some of its fields (others are kept)",
        description="Reads the principal, applies the options and writes it back; fails if "
        "another operator changed it meanwhile. Creating one needs --tier and --role.",
    )
    p.add_argument("name", help="the common name of the principal's client certificate")
    changes.add_options(p)
    client_options(p)
    p.set_defaults(handler=cmd_principal_set)
    p = principal.add_parser(
        "remove", help="remove a principal at once (their queued jobs are denied at dispatch)"
    )
    p.add_argument("name")
    client_options(p)
    p.set_defaults(handler=cmd_principal_remove)


def _quota_text(q: access_pb2.Quota) -> str:
    return (
        f"max active jobs {limit_text(q.max_active_jobs)}, "
        f"max shots per day {limit_text(q.max_shots_per_day)}"
    )


def _expiry(stamp: Timestamp, now: dt.datetime) -> str:
    text = format_time(stamp)
    return text + " (EXPIRED)" if stamp.ToDatetime(dt.UTC) <= now else text


def _clearance(p: access_pb2.Principal, now: dt.datetime) -> str:
    if not p.HasField("clearance_expires_at"):
        return "never expires"
    return _expiry(p.clearance_expires_at, now)


def _principal_text(record: access_pb2.PrincipalRecord) -> str:
    p, now = record.principal, dt.datetime.now(dt.UTC)
    training = [
        f"  {course}  until {_expiry(p.training[course], now)}" for course in sorted(p.training)
    ]
    lines = [
        f"name:          {p.name}",
        f"tier:          {p.tier}",
        f"roles:         {changes.names(p.roles)}",
        f"clearance:     {_clearance(p, now)}",
        f"affiliation:   {p.affiliation or '-'}",
        f"nationality:   {p.nationality or '-'}",
        f"jurisdictions: {changes.names(p.jurisdictions)}",
        f"projects:      {changes.names(p.projects)}",
        f"training:      {'' if training else 'none'}".rstrip(),
        *training,
        f"licences:      {changes.names(p.licences)}",
        f"quota:         {_quota_text(p.quota)}",
        f"record:        {meta_text(record.meta)}",
    ]
    return "\n".join(lines)


@broker_command()
def cmd_principal_list(args: argparse.Namespace, c: Client) -> int:
    reply = c.call(c.access.ListPrincipals, access_pb2.ListPrincipalsRequest())
    now = dt.datetime.now(dt.UTC)
    lines = [f"{'NAME':<16}{'TIER':<12}{'ROLES':<30}{'CLEARANCE UNTIL':<37}{'PROJECTS':<30}VERSION"]
    for record in reply.principals:
        p = record.principal
        lines.append(
            f"{p.name:<16}{p.tier:<12}{','.join(p.roles):<30}{_clearance(p, now):<37}"
            f"{','.join(p.projects) or '-':<30}{record.meta.version}"
        )
    text = "\n".join(lines) if reply.principals else "no principals"
    show(reply, as_json=args.json, text=text)
    return 0


@broker_command(LIST_PRINCIPALS)
def cmd_principal_show(args: argparse.Namespace, c: Client) -> int:
    record = c.call(c.access.GetPrincipal, access_pb2.GetPrincipalRequest(name=args.name))
    show(record, as_json=args.json, text=_principal_text(record))
    return 0


@guarded()
def cmd_principal_set(args: argparse.Namespace) -> int:
    if not changes.given(args):
        raise CommandError("nothing to change: give at least one option (see --help)")
    # Bad times are refused before the broker is asked anything.
    clearance = None
    if args.clearance_until not in (None, "never"):
        clearance = parse_time(args.clearance_until, "--clearance-until")
    training = changes.training(args.training)
    return using_client(args, lambda c: _set_principal(args, c, clearance, training))


def _set_principal(
    args: argparse.Namespace,
    c: Client,
    clearance: Timestamp | None,
    training: Mapping[str, Timestamp],
) -> int:
    record = _principal_or_new(args, c)
    principal, version = record.principal, record.meta.version
    before = principal.SerializeToString(deterministic=True)
    changes.apply(principal, args, clearance, training)
    if version and principal.SerializeToString(deterministic=True) == before:
        text = f"principal {args.name} unchanged ({meta_text(record.meta)})"
        show(record, as_json=args.json, text=text)
        return 0
    request = access_pb2.PutPrincipalRequest(principal=principal, expected_version=version)
    stored = c.call(c.access.PutPrincipal, request)
    verb = "updated" if version else "created"
    text = f"{verb} principal {args.name}\n{_principal_text(stored)}"
    show(stored, as_json=args.json, text=text)
    return 0


def _principal_or_new(args: argparse.Namespace, c: Client) -> access_pb2.PrincipalRecord:
    """The principal on record, or a new one when `set` was given what creating one needs."""
    wanted = access_pb2.GetPrincipalRequest(name=args.name)
    try:
        record: access_pb2.PrincipalRecord = c.call(c.access.GetPrincipal, wanted)
    except QtestbedError as exc:
        if exc.code != "NOT_FOUND":
            raise
        if not args.tier or not args.role:
            raise CommandError(
                f"principal {args.name!r} does not exist; to create it give --tier and at "
                "least one --role (or check the name with 'qtestbed principal list')"
            ) from None
        return access_pb2.PrincipalRecord(principal=access_pb2.Principal(name=args.name))
    return record


@broker_command(LIST_PRINCIPALS)
def cmd_principal_remove(args: argparse.Namespace, c: Client) -> int:
    reply = c.call(c.access.DeletePrincipal, access_pb2.DeletePrincipalRequest(name=args.name))
    text = f"removed principal {args.name}; any jobs they have queued will be denied"
    show(reply, as_json=args.json, text=text)
    return 0
