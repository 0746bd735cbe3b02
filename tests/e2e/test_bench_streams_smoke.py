"""bench/bench_streams.py --quick runs start to finish: alice's streams open, see bob's submits
move their jobs, none fails, and the ratio line is printed.

A smoke test only: the quick run's numbers mean nothing, so nothing here checks a timing.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_streams.py"


@pytest.mark.timeout(180)
def test_quick_streams_bench_exits_cleanly_and_prints_the_ratio() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick"],
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    held = re.search(r"holder:\s+updates (\d+) failed (\d+)", done.stdout)
    assert held is not None, done.stdout
    assert int(held.group(1)) > 0
    assert held.group(2) == "0"
    assert re.search(r"^RATIO loaded/quiet bob SubmitJob p50: [0-9.]+ ", done.stdout, re.M)
