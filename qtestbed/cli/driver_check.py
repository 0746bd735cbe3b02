"""`qtestbed driver check --config FILE [--json]`: run the conformance battery
(`qtestbed.driver_check`) against the backend the driver settings select, print a report, and
exit 1 when any check fails (2 when the settings cannot be checked at all)."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from qtestbed.cli.errors import CommandError
from qtestbed.driver_check import Battery, Outcome
from qtestbed.driver_check_setup import CheckSetupError, prepare


def run_check(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="qtestbed-driver-check-") as work:
        try:
            setup = prepare(Path(args.config), Path(work))
        except CheckSetupError as exc:
            raise CommandError(f"cannot check {args.config}: {exc}") from None
        outcomes = Battery(setup).run()
    device = setup.config.device
    passed = bool(outcomes) and all(o.passed for o in outcomes)
    if args.json:
        print(json.dumps(_as_json(args.config, device.device_id, device.backend, outcomes)))
    else:
        _print_report(args.config, device.device_id, device.backend, outcomes)
    return 0 if passed else 1


def _as_json(config: Path, device: str, backend: str, outcomes: list[Outcome]) -> object:
    return {
        "config": str(config),
        "device": device,
        "backend": backend,
        "passed": all(o.passed for o in outcomes),
        "checks": [{"name": o.name, "passed": o.passed, "detail": o.detail} for o in outcomes],
    }


def _print_report(config: Path, device: str, backend: str, outcomes: list[Outcome]) -> None:
    print(f"qtestbed driver check: device {device}, backend {backend}, settings {config}")
    width = max(len(o.name) for o in outcomes)
    for o in outcomes:
        print(f"  {'PASS' if o.passed else 'FAIL'}  {o.name.ljust(width)}  {o.detail}")
    failed = [o.name for o in outcomes if not o.passed]
    summary = f"{len(outcomes)} checks: {len(outcomes) - len(failed)} passed"
    if failed:
        summary += f", {len(failed)} failed ({', '.join(failed)})"
    if outcomes and outcomes[0].name == "attestation" and not outcomes[0].passed:
        summary += "; nothing else was run without an attested driver"
    print(summary)
