"""`credential request|issue|renew`: making a client certificate, without the broker.

The researcher's key is made where they run `request` and never leaves; the operator runs
`issue` and `renew` wherever the client-issuing CA's key is kept (an offline folder, not the
broker's host) and, with --record, tells the broker about the result so that it is listed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any

from cryptography import x509

from attestation.issuance import (
    DEFAULT_CLIENT_DAYS,
    MAX_CLIENT_DAYS,
    IssuanceError,
    issue_client_certificate_from_csr,
    renew_client_certificate,
)
from attestation.pki import serial_hex
from qtestbed import credential_files as files
from qtestbed.cli.common import read_input
from qtestbed.cli.errors import REFUSED, CommandError, guarded
from qtestbed.cli.output import show
from qtestbed.cli.runner import open_client
from qtestbed.client import Client
from qtestbed.shared.identity import check_facility_id, principal_uri
from qtestbed.v1 import credentials_pb2 as pb

ISSUE_ADVICE = {
    "INVALID_ARGUMENT": "nothing was written; is {name} a principal? ('qtestbed principal set "
    "{name} --tier ... --role researcher' creates one) and is the facility id right?",
}
RENEW_ADVICE = {"INVALID_ARGUMENT": "nothing was written; is the principal still on record?"}


def register(group: Any) -> None:
    _register_request(group)
    _register_issue(group)
    _register_renew(group)


def _register_request(group: Any) -> None:
    p = group.add_parser(
        "request",
        help="researcher: make a key, a certificate request (CSR) and a profile",
        description="Writes NAME.key (yours alone: never send it), NAME.csr (send it to your "
        "facility's operator) and NAME.toml (your profile, usable once the operator's NAME.pem "
        "is saved beside them) in --out.",
    )
    p.add_argument("name", help="your principal name, as the operator registers it")
    p.add_argument("--facility-id", type=_facility_id, required=True, help="from the operator")
    p.add_argument("--out", type=Path, required=True, help="folder for the files (created)")
    p.add_argument("--broker", default="127.0.0.1:50051", help="broker address HOST:PORT")
    p.add_argument("--ca-cert", type=Path, help="the facility root certificate (copied as ca.pem)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(handler=cmd_request)


def _register_issue(group: Any) -> None:
    p = group.add_parser(
        "issue",
        help="operator: issue a certificate from a researcher's CSR",
        description="Signs with the client-issuing CA in --ca-dir (clients-ca.key, owner-only, "
        "and clients-ca.pem); the principal is NAME at the facility, whatever the CSR asks.",
    )
    p.add_argument("csr", type=Path, help="the researcher's NAME.csr")
    p.add_argument("--name", required=True, help="the principal the certificate names")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--facility-id", type=_facility_id, help="the facility's id")
    which.add_argument("--facility", type=Path, help="facility.toml to read the id from")
    _signing_options(p)
    p.set_defaults(handler=cmd_issue)


def _register_renew(group: Any) -> None:
    p = group.add_parser(
        "renew",
        help="operator: a new certificate for the same key and principal",
        description="Same key and principal, new serial and lifetime; revoke the old serial "
        "afterwards if it should stop working before it expires.",
    )
    p.add_argument("cert", type=Path, help="the certificate to renew (issued by this CA)")
    _signing_options(p)
    p.set_defaults(handler=cmd_renew)


def _signing_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ca-dir",
        type=Path,
        required=True,
        help="folder with clients-ca.key and clients-ca.pem: the offline CA folder "
        "`qtestbed init` wrote (DIR-offline-ca), never the broker's",
    )
    p.add_argument(
        "--days",
        type=_days,
        default=DEFAULT_CLIENT_DAYS,
        help=f"lifetime, 1 to {MAX_CLIENT_DAYS} days (default {DEFAULT_CLIENT_DAYS})",
    )
    p.add_argument("--out", type=Path, required=True, help="certificate file to write")
    p.add_argument(
        "--record",
        action="store_true",
        help="tell the broker (operator profile), so that 'credential list' shows it",
    )
    p.add_argument("--profile", type=Path, help="operator profile for --record")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")


def _days(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_CLIENT_DAYS:
        raise argparse.ArgumentTypeError(f"{value} is not 1 to {MAX_CLIENT_DAYS} days")
    return value


def _facility_id(text: str) -> str:
    try:
        return check_facility_id(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


@guarded()
def cmd_request(args: argparse.Namespace) -> int:
    try:
        made = files.write_request(
            args.name,
            facility_id=args.facility_id,
            out=args.out,
            broker=args.broker,
            ca_cert=args.ca_cert,
        )
    except files.CredentialFileError as exc:
        raise CommandError(str(exc)) from exc
    body = {
        "principal_uri": made.principal_uri,
        "key": str(made.key),
        "csr": str(made.csr),
        "profile": str(made.profile),
        "certificate": str(made.cert),
        "ca_cert": str(made.ca_cert) if made.ca_cert_present else None,
    }
    show(body, as_json=args.json, text=_request_text(made))
    return 0


def _request_text(made: files.RequestFiles) -> str:
    root = (
        f"facility root certificate: {made.ca_cert}"
        if made.ca_cert_present
        else f"facility root certificate: ask the operator for it and save it as {made.ca_cert}"
    )
    return "\n".join(
        [
            f"requested a credential for {made.principal_uri}",
            f"  private key: {made.key} (owner-only; it never leaves this machine)",
            f"  request:     {made.csr}  <- send this file, and only this one, to the operator",
            f"  profile:     {made.profile}",
            f"  {root}",
            f"When the operator sends the certificate, save it as {made.cert}, then:",
            f"  qtestbed devices --profile {made.profile}",
        ]
    )


@guarded(ISSUE_ADVICE)
def cmd_issue(args: argparse.Namespace) -> int:
    facility_id = args.facility_id or _read_facility_id(args.facility)
    csr = read_input(args.csr)
    ca = _issuing_ca(args.ca_dir)
    try:
        cert = issue_client_certificate_from_csr(
            csr,
            ca_key=ca.key,
            ca_cert=ca.cert,
            principal_uri=principal_uri(facility_id, args.name),
            common_name=args.name,
            now=dt.datetime.now(dt.UTC),
            days=args.days,
        )
    except IssuanceError as exc:
        raise CommandError(f"nothing issued from {args.csr}: {exc}") from exc
    return _deliver(args, cert, ca, verb="issued")


@guarded(RENEW_ADVICE)
def cmd_renew(args: argparse.Namespace) -> int:
    old_pem = read_input(args.cert)
    ca = _issuing_ca(args.ca_dir)
    try:
        old = x509.load_pem_x509_certificate(old_pem)
        cert = renew_client_certificate(
            old_pem, ca_key=ca.key, ca_cert=ca.cert, now=dt.datetime.now(dt.UTC), days=args.days
        )
    except (ValueError, IssuanceError) as exc:
        raise CommandError(f"cannot renew {args.cert}: {exc}") from exc
    if args.record:
        with open_client(args.profile) as client:
            _refuse_revoked(client, serial_hex(old))
    else:
        print(
            f"qtestbed: note: not checked against revocations (no --record); make sure serial "
            f"{serial_hex(old)} was not revoked ('qtestbed credential list')",
            file=sys.stderr,
        )
    return _deliver(args, cert, ca, verb="renewed")


def _refuse_revoked(c: Client, serial: str) -> None:
    """A revoked credential is not renewed: its key may be the reason it was revoked."""
    known = c.call(c.credentials.ListCredentials, pb.ListCredentialsRequest()).credentials
    for cred in known:
        if cred.serial == serial and cred.revoked:
            raise CommandError(
                f"credential {serial} was revoked ({cred.revocation_reason}); its key is not "
                "certified again: the principal makes a new key ('qtestbed credential request') "
                "and you issue from that CSR",
                REFUSED,
            )


def _read_facility_id(path: Path) -> str:
    try:
        return files.facility_id_of(path)
    except files.CredentialFileError as exc:
        raise CommandError(str(exc)) from exc


def _issuing_ca(ca_dir: Path) -> files.IssuingCa:
    try:
        return files.load_issuing_ca(ca_dir)
    except files.CredentialFileError as exc:
        raise CommandError(str(exc)) from exc


def _deliver(
    args: argparse.Namespace, cert: x509.Certificate, ca: files.IssuingCa, verb: str
) -> int:
    """Record the certificate with the broker when asked, then write it (leaf, then the CA)."""
    bundle = files.certificate_bundle(cert, ca)
    recorded: pb.Credential | None = None
    if args.record:
        request = pb.RecordCredentialRequest(certificate_pem=bundle)
        with open_client(args.profile) as c:
            recorded = c.call(c.credentials.RecordCredential, request)
    try:
        files.write_public_file(args.out, bundle)
    except files.CredentialFileError as exc:
        raise CommandError(str(exc)) from exc
    body = _issued(cert, args.out, recorded)
    show(body, as_json=args.json, text=_issued_text(body, verb))
    return 0


def _issued(cert: x509.Certificate, out: Path, recorded: pb.Credential | None) -> dict[str, object]:
    uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {
        "serial": serial_hex(cert),
        "principal_uri": uris.get_values_for_type(x509.UniformResourceIdentifier)[0],
        "not_before": cert.not_valid_before_utc.isoformat(timespec="seconds"),
        "not_after": cert.not_valid_after_utc.isoformat(timespec="seconds"),
        "certificate": str(out),
        "recorded": recorded,
    }


def _issued_text(body: dict[str, object], verb: str) -> str:
    recorded = (
        "yes ('qtestbed credential list' shows it)"
        if body["recorded"] is not None
        else "no (pass --record so that the broker lists it)"
    )
    return "\n".join(
        [
            f"{verb} a credential for {body['principal_uri']}",
            f"  serial:      {body['serial']}",
            f"  valid:       {body['not_before']} to {body['not_after']}",
            f"  certificate: {body['certificate']} (the certificate, then the client-issuing CA)",
            f"  recorded:    {recorded}",
            "Send the certificate file to its owner (with the facility root certificate, "
            "ca/ca.pem, if they have none); they save it beside their key.",
        ]
    )
