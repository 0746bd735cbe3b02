"""bench/bench_metrics.py --quick runs start to finish and prints both arms and the ratio.

A smoke test only: the quick run's numbers mean nothing, so nothing here checks a timing.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_metrics.py"
NUMBER = r"[0-9][0-9,]*(?:\.[0-9]+)?"


@pytest.mark.timeout(240)
def test_quick_metrics_bench_runs_both_arms_and_prints_the_ratio() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick"],
        capture_output=True,
        text=True,
        timeout=220,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    out = done.stdout
    for arm in ("shipped", "bare"):
        assert re.search(rf"^  {arm} +loadgen x1: +{NUMBER} req/s", out, re.M), (arm, out)
    assert re.search(rf"^RATIO shipped/bare = {NUMBER} ", out, re.M), out
    assert "ERRORS" not in out, out
