"""`qtestbed report`: the facility's transparency report, read from the broker's store.

Exit status: 0 the report was made, 1 it was made but the audit log did not verify (the report
says so at the top), 2 it could not be made (bad option, settings, certificate or store).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from qtestbed.cli.common import parse_time
from qtestbed.cli.errors import CommandError, guarded

DEFAULT_MIN_COUNT = 5


def register(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="transparency report: who the facility serves, refusals, device incidents, waits",
        description="Read the broker's store and audit log (SQLite or PostgreSQL, as the "
        "settings name it; the broker may be running) and print a transparency report for "
        "jobs submitted in [--since, --until). Counts of fewer than --min-count are hidden so "
        "no individual is singled out. Exit 0 done, 1 done but the audit log did not verify, "
        "2 cannot run.",
    )
    p.add_argument(
        "--since",
        required=True,
        metavar="DATE",
        help="start of the period, ISO 8601 with a zone, e.g. 2026-01-01T00:00:00Z (included)",
    )
    p.add_argument(
        "--until",
        metavar="DATE",
        help="end of the period, ISO 8601 with a zone (excluded; default now)",
    )
    p.add_argument(
        "--format",
        choices=("md", "json", "csv"),
        default="md",
        help="md for people (default), json for programs, csv as section,group,key,value rows",
    )
    p.add_argument(
        "--config",
        type=Path,
        default=Path("broker.toml"),
        metavar="FILE",
        help="broker settings TOML naming the store and the broker certificate "
        "(default ./broker.toml)",
    )
    p.add_argument(
        "--min-count",
        type=int,
        default=DEFAULT_MIN_COUNT,
        metavar="K",
        help=f"hide counts below K and merge groups of fewer than K people (default "
        f"{DEFAULT_MIN_COUNT}; 1 hides nothing)",
    )
    p.set_defaults(handler=cmd_report)


def _epoch(text: str, option: str) -> float:
    stamp = parse_time(text, option)  # a CommandError (exit 2) with advice when there is no zone
    return stamp.seconds + stamp.nanos / 1e9


@guarded()
def cmd_report(args: argparse.Namespace) -> int:
    # Imported here: the report reads the store directly, which the other commands never do.
    from broker.report import RENDERERS, ReportError, collect
    from broker.settings import SettingsError, load_settings

    since = _epoch(args.since, "--since")
    until = _epoch(args.until, "--until") if args.until else time.time()
    if since >= until:
        raise CommandError(f"--since {args.since} must be before --until {args.until or '(now)'}")
    if args.min_count < 1:
        raise CommandError("--min-count must be 1 or more")
    try:
        settings = load_settings(args.config)
    except (SettingsError, OSError, ValueError) as exc:
        raise CommandError(f"cannot make the report: {exc}") from exc
    try:
        report = collect(settings, since=since, until=until, min_count=args.min_count)
    except ReportError as exc:
        raise CommandError(f"cannot make the report: {exc}") from exc
    sys.stdout.write(RENDERERS[args.format](report))
    if not report.integrity.ok:
        print(
            "qtestbed: warning: the audit log did not verify; see the report's audit_log "
            "section and run 'qtestbed audit verify'",
            file=sys.stderr,
        )
        return 1
    return 0
