"""Helpers shared by the CLI commands: the common options, files and times."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp

from qtestbed.cli.errors import CommandError


def client_options(p: argparse.ArgumentParser) -> None:
    """--profile and --json, which every command that talks to the broker takes."""
    p.add_argument("--profile", type=Path, help="client profile TOML (or set QTESTBED_PROFILE)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")


def limit_count(text: str) -> int:
    """An argparse type for a quota limit: a count of 0 or more, where 0 means no limit."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; use 0 for no limit")
    return value


def read_input(path: Path) -> bytes:
    """The bytes of a file the person named; a CommandError saying why it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc}") from exc


def parse_time(text: str, option: str = "time") -> Timestamp:
    """An ISO 8601 time with its zone as a protobuf Timestamp; a CommandError with advice otherwise.

    A time without a zone is refused rather than guessed: the broker and the operator may not
    share a clock zone, and an access window an hour off is a real incident.
    """
    example = "e.g. 2030-01-31T09:00:00+00:00 or 2030-01-31T09:00Z"
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise CommandError(
            f"{option} {text!r} is not an ISO 8601 time; write one with its zone, {example}"
        ) from None
    if when.tzinfo is None or when.utcoffset() is None:
        raise CommandError(
            f"{option} {text!r} has no time zone; add one, {example} (+00:00 is UTC)"
        )
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


def format_time(stamp: Timestamp) -> str:
    """A protobuf Timestamp as ISO 8601 in UTC, to the second."""
    return stamp.ToDatetime(dt.UTC).isoformat(timespec="seconds")
