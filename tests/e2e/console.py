"""Runs the `qtestbed` console script as a user would: a subprocess of this interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path


def qtestbed(
    *args: str,
    profile: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """`python -m qtestbed ARGS`, with QTESTBED_PROFILE set when `profile` is given."""
    environment = {**os.environ, **(env or {})}
    if profile is not None:
        environment["QTESTBED_PROFILE"] = str(profile)
    return subprocess.run(
        [sys.executable, "-m", "qtestbed", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
        check=False,
    )
