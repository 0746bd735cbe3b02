"""`qtestbed receipt verify`: check a saved result bundle offline against the facility root.

With `--audit-key` it also checks the bundle's audit inclusion proof: that the facility's
tamper-evident audit log, as of a checkpoint signed by that key, records this job completing
with these counts. The key is the broker certificate (or its public key) the facility
publishes; pin the file you got out of band and compare the key id printed here with the one
the facility announces. A checkpoint signed by any other key fails.

With `--witness-key` (repeatable; the witnesses' public keys, pinned out of band as well) at
least `--require-witness N` (default 1) of those witnesses must have cosigned the proof's
checkpoint, so that a broker (or whoever holds its key) showing this researcher a forked log
would have had to fool those witnesses too. Without it the witnesses are reported as not
checked.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from attestation.keys import VerifyKey
from attestation.pki import CertificateError, cert_from_pem
from qtestbed.cli.errors import CommandError, guarded
from qtestbed.cli.output import print_json
from qtestbed.receipt_bundle import ResultBundle, verify_bundle


def register(sub: Any) -> None:
    receipt = sub.add_parser("receipt", help="verify result receipts offline").add_subparsers(
        dest="receipt_command", required=True, metavar="ACTION"
    )
    p = receipt.add_parser("verify", help="verify a bundle saved with `qtestbed result --save`")
    p.add_argument("bundle", type=Path, help="the saved result bundle (JSON)")
    p.add_argument("--ca", type=Path, required=True, help="the facility's root certificate (PEM)")
    p.add_argument("--circuit", type=Path, help="also check that this file is the circuit run")
    p.add_argument(
        "--audit-key",
        type=Path,
        help="the facility's audit signing certificate or public key (PEM, pinned): also check "
        "the bundle's proof that its result is in the signed audit log",
    )
    p.add_argument(
        "--witness-key",
        type=Path,
        action="append",
        default=[],
        help="a witness's public key (PEM, pinned; repeatable): also require that this "
        "witness cosigned the audit checkpoint (needs --audit-key)",
    )
    p.add_argument(
        "--require-witness",
        type=int,
        metavar="N",
        help="how many of the --witness-key witnesses must have cosigned (default 1)",
    )
    p.add_argument("--json", action="store_true", help="print the verdict as JSON")
    p.set_defaults(handler=cmd_verify)


def _check_witness_options(
    args: argparse.Namespace, audit_key: VerifyKey | None, witness_keys: list[VerifyKey]
) -> None:
    if witness_keys and audit_key is None:
        raise CommandError(
            "--witness-key needs --audit-key: a witness vouches for the audit checkpoint, "
            "which is checked with the facility's audit key"
        )
    if args.require_witness is not None and not witness_keys:
        raise CommandError("--require-witness needs at least one --witness-key")
    pinned = len({k.key_id for k in witness_keys})
    if args.require_witness is not None and not 1 <= args.require_witness <= pinned:
        raise CommandError(
            f"--require-witness {args.require_witness}: give a number from 1 to the {pinned} "
            "distinct witness key(s) pinned"
        )


def load_audit_key(path: Path) -> VerifyKey:
    """A PEM certificate's public key, or a PEM public key."""
    data = path.read_bytes()
    if b"-----BEGIN CERTIFICATE-----" in data:
        return VerifyKey.from_cryptography(cert_from_pem(data).public_key())
    return VerifyKey.from_pem(data)


@guarded()
def cmd_verify(args: argparse.Namespace) -> int:
    try:
        bundle = ResultBundle.from_json(args.bundle.read_text())
        ca_pem = args.ca.read_bytes()
        circuit = args.circuit.read_bytes() if args.circuit is not None else None
        audit_key = load_audit_key(args.audit_key) if args.audit_key is not None else None
        witness_keys = [load_audit_key(path) for path in args.witness_key]
    except (OSError, ValueError, CertificateError) as exc:
        raise CommandError(f"cannot verify: {exc}") from exc
    _check_witness_options(args, audit_key, witness_keys)
    verdict = verify_bundle(
        bundle,
        ca_pem,
        circuit=circuit,
        audit_key=audit_key,
        witness_keys=witness_keys,
        require_witnesses=args.require_witness or 1,
    )
    key_id = audit_key.key_id if audit_key is not None else None
    if args.json:
        body = {
            "valid": verdict.valid,
            "problems": verdict.problems,
            "job_id": bundle.job_id,
            "device_id": bundle.device_id,
            "measurements": verdict.measurements,
            "audit_inclusion": verdict.audit_inclusion,
            "audit_key_id": key_id,
            "witnesses": verdict.witnesses,
            "witness_key_ids": verdict.witness_key_ids,
        }
        print_json(body)
    elif verdict.valid:
        print(
            f"receipt valid: job {bundle.job_id} ran on {bundle.device_id}, "
            f"{bundle.shots} shots, counts as signed by the attested device"
        )
        for name, value in verdict.measurements.items():
            print(f"  {name}: {value}")
        if key_id is not None:
            print(f"audit log: the result is in the log signed by audit key {key_id}")
        else:
            print("audit log: inclusion not checked (give --audit-key to check it)")
        if verdict.witnesses == "witnessed":
            print(f"audit log: checkpoint cosigned by pinned witness(es) {verdict.witness_key_ids}")
        else:
            print("audit log: witnesses not checked (give --witness-key to require a witness)")
    else:
        print("receipt INVALID:")
        for problem in verdict.problems:
            print(f"  - {problem}")
    return 0 if verdict.valid else 1
