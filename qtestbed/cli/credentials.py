"""`qtestbed credential ...`: a principal's certificates from request to revocation.

request (the researcher: key and CSR made here, the key never leaves), issue and renew (the
operator, with the client-issuing CA wherever it is kept; see `qtestbed.cli.credential_issue`),
record (operator), list and revoke (operator or security), through the broker's
CredentialService.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import Any, Literal

from qtestbed.cli import credential_issue
from qtestbed.cli.common import client_options, format_time, read_input
from qtestbed.cli.output import show
from qtestbed.cli.runner import broker_command
from qtestbed.client import Client
from qtestbed.v1 import credentials_pb2 as pb

RECORD_ADVICE = {
    "INVALID_ARGUMENT": "only certificates of the client-issuing CA naming a principal on "
    "record can be recorded ('qtestbed principal list')"
}
REVOKE_ADVICE = {"INVALID_ARGUMENT": "give the serial as 'qtestbed credential list' prints it"}


def register(sub: Any) -> None:
    group = sub.add_parser(
        "credential",
        help="client certificates: request, issue, renew, list, revoke",
        description="A researcher makes a key and a request (credential request); an operator "
        "issues the certificate from it with the client-issuing CA (credential issue) and "
        "renews it (credential renew); operators and security list and revoke credentials.",
    ).add_subparsers(dest="credential_command", required=True, metavar="ACTION")
    credential_issue.register(group)
    p = group.add_parser(
        "record",
        help="operator: tell the broker about certificates already issued (e.g. by init)",
        description="Records each certificate so that 'credential list' shows it; the same "
        "certificate again changes nothing. 'credential issue --record' does this as it issues.",
    )
    p.add_argument("certs", type=Path, nargs="+", metavar="CERT", help="certificate file(s)")
    client_options(p)
    p.set_defaults(handler=cmd_record)
    p = group.add_parser("list", help="operator or security: credentials the broker knows of")
    p.add_argument("--principal", default="", help="only this principal's credentials")
    client_options(p)
    p.set_defaults(handler=cmd_list)
    p = group.add_parser(
        "revoke",
        help="operator or security: revoke a credential by serial, for good",
        description="Refused from its next call on every broker replica; its open streams end.",
    )
    p.add_argument("serial", help="the certificate's serial in hex, as 'credential list' shows")
    p.add_argument("--reason", required=True, help="why (kept in the audit log)")
    client_options(p)
    p.set_defaults(handler=cmd_revoke)


def state_of(c: pb.Credential, now: dt.datetime) -> str:
    if c.revoked:
        return "revoked"
    if c.HasField("not_after") and c.not_after.ToDatetime(dt.UTC) <= now:
        return "expired"
    return "valid"


def _when(c: pb.Credential, field: Literal["not_after", "revoked_at"]) -> str:
    return format_time(getattr(c, field)) if c.HasField(field) else "-"


@broker_command()
def cmd_list(args: argparse.Namespace, c: Client) -> int:
    request = pb.ListCredentialsRequest(principal=args.principal)
    reply = c.call(c.credentials.ListCredentials, request)
    now = dt.datetime.now(dt.UTC)
    lines = [f"{'SERIAL':<42}{'PRINCIPAL':<16}{'NOT AFTER':<27}{'STATE':<9}RECORDED BY"]
    for cred in reply.credentials:
        lines.append(
            f"{cred.serial:<42}{cred.principal or '-':<16}{_when(cred, 'not_after'):<27}"
            f"{state_of(cred, now):<9}{cred.recorded_by or '-'}"
        )
    text = "\n".join(lines) if reply.credentials else "no credentials on record"
    show(reply, as_json=args.json, text=text)
    return 0


@broker_command(RECORD_ADVICE)
def cmd_record(args: argparse.Namespace, c: Client) -> int:
    pems = [read_input(path) for path in args.certs]  # all readable before any is recorded
    recorded = [
        c.call(c.credentials.RecordCredential, pb.RecordCredentialRequest(certificate_pem=pem))
        for pem in pems
    ]
    text = "\n".join(
        f"recorded {cred.serial} of {cred.principal} (until {_when(cred, 'not_after')})"
        for cred in recorded
    )
    show(recorded, as_json=args.json, text=text)
    return 0


@broker_command(REVOKE_ADVICE)
def cmd_revoke(args: argparse.Namespace, c: Client) -> int:
    request = pb.RevokeCredentialRequest(serial=args.serial, reason=args.reason)
    revoked = c.call(c.credentials.RevokeCredential, request)
    owner = f" of {revoked.principal}" if revoked.principal else " (never recorded)"
    text = (
        f"revoked credential {revoked.serial}{owner} at {_when(revoked, 'revoked_at')}: "
        f"refused from its next call, its open streams end\n"
        f"  by {revoked.revoked_by}: {revoked.revocation_reason}"
    )
    show(revoked, as_json=args.json, text=text)
    return 0
