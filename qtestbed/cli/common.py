"""Helpers shared by the CLI commands."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp

from qtestbed.client import Client, Profile


def client_options(p: argparse.ArgumentParser) -> None:
    """--profile and --json, which every command that talks to the broker takes."""
    p.add_argument("--profile", type=Path, help="client profile TOML (or set QTESTBED_PROFILE)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")


def fail(message: str, code: int = 2) -> int:
    print(f"qtestbed: {message}", file=sys.stderr)
    return code


def profile_path(explicit: Path | None) -> Path:
    if explicit is not None:
        return explicit
    env = os.environ.get("QTESTBED_PROFILE")
    if env:
        return Path(env)
    raise SystemExit(fail("no client profile: pass --profile FILE or set QTESTBED_PROFILE"))


def open_client(explicit: Path | None) -> Client:
    path = profile_path(explicit)
    try:
        return Client(Profile.load(path))
    except (OSError, KeyError, ValueError) as exc:
        raise SystemExit(fail(f"cannot use client profile {path}: {exc}")) from exc


def parse_time(text: str, option: str = "time") -> Timestamp:
    """An ISO 8601 time with its zone as a protobuf Timestamp; exits with advice otherwise.

    A time without a zone is refused rather than guessed: the broker and the operator may not
    share a clock zone, and an access window an hour off is a real incident.
    """
    example = "e.g. 2030-01-31T09:00:00+00:00 or 2030-01-31T09:00Z"
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise SystemExit(
            fail(f"{option} {text!r} is not an ISO 8601 time; write one with its zone, {example}")
        ) from None
    if when.tzinfo is None or when.utcoffset() is None:
        raise SystemExit(
            fail(f"{option} {text!r} has no time zone; add one, {example} (+00:00 is UTC)")
        )
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


def format_time(stamp: Timestamp) -> str:
    """A protobuf Timestamp as ISO 8601 in UTC, to the second."""
    return stamp.ToDatetime(dt.UTC).isoformat(timespec="seconds")
