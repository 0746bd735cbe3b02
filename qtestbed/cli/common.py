"""Helpers shared by the CLI commands."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from qtestbed.client import Client, Profile


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
