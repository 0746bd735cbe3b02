"""`qtestbed receipt verify`: check a saved result bundle offline against the facility root."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

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
    p.add_argument("--json", action="store_true", help="print the verdict as JSON")
    p.set_defaults(handler=cmd_verify)


@guarded()
def cmd_verify(args: argparse.Namespace) -> int:
    try:
        bundle = ResultBundle.from_json(args.bundle.read_text())
        ca_pem = args.ca.read_bytes()
        circuit = args.circuit.read_bytes() if args.circuit is not None else None
    except (OSError, ValueError) as exc:
        raise CommandError(f"cannot verify: {exc}") from exc
    verdict = verify_bundle(bundle, ca_pem, circuit=circuit)
    if args.json:
        body = {
            "valid": verdict.valid,
            "problems": verdict.problems,
            "job_id": bundle.job_id,
            "device_id": bundle.device_id,
            "measurements": verdict.measurements,
        }
        print_json(body)
    elif verdict.valid:
        print(
            f"receipt valid: job {bundle.job_id} ran on {bundle.device_id}, "
            f"{bundle.shots} shots, counts as signed by the attested device"
        )
        for name, value in verdict.measurements.items():
            print(f"  {name}: {value}")
    else:
        print("receipt INVALID:")
        for problem in verdict.problems:
            print(f"  - {problem}")
    return 0 if verdict.valid else 1
