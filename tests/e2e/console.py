"""Runs the `qtestbed` console script as a user would: a subprocess of this interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


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


def json_output(done: subprocess.CompletedProcess[str], *, code: int = 0) -> Any:
    """The one JSON document a `--json` command printed, once its exit status is `code`."""
    assert done.returncode == code, done.stdout + done.stderr
    return json.loads(done.stdout)


def json_lines(done: subprocess.CompletedProcess[str], *, code: int = 0) -> list[Any]:
    """The JSON documents a streaming `--json` command printed, one a line (watch, audit)."""
    assert done.returncode == code, done.stdout + done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def together(*calls: Callable[[], T]) -> list[T]:
    """The results of independent `calls` (console commands), run side by side: most of a
    command's time is its interpreter starting, which several cores do at once. The first
    failure is raised, as if they had run in turn."""
    with ThreadPoolExecutor(max_workers=min(len(calls), os.cpu_count() or 1)) as pool:
        futures = [pool.submit(call) for call in calls]
        return [future.result() for future in futures]
