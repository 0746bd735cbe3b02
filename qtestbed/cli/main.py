"""`qtestbed`: one command line for researchers, operators and the processes themselves."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from qtestbed.cli import (
    access,
    audit,
    credentials,
    demo,
    facility,
    migrate,
    operator,
    policy,
    principals,
    probe,
    processes,
    projects,
    receipt,
    report,
    researcher,
    sessions,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qtestbed",
        description="Broker for shared quantum testbeds: attested devices, cleared requesters, "
        "signed results.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    processes.register(sub)
    migrate.register(sub)
    probe.register(sub)
    facility.register(sub)
    researcher.register(sub)
    sessions.register(sub)
    demo.register(sub)
    operator.register(sub)
    principals.register(sub)
    credentials.register(sub)
    access.register(sub)
    projects.register(sub)
    audit.register(sub)
    receipt.register(sub)
    policy.register(sub)
    report.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
