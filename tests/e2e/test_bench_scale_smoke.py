"""bench/bench_scale.py --quick runs start to finish on SQLite (and on PostgreSQL when the test
server is configured): the store is filled directly, the broker restarts on it, alice submits,
a real driver completes jobs, the broker starts again on the same store, and every ratio and
restart line is printed.

A smoke test only: the quick run's numbers mean nothing, so nothing here checks a timing.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_scale.py"


@pytest.mark.timeout(300)
def test_quick_scale_bench_exits_cleanly_and_prints_every_ratio() -> None:
    stores = "sqlite,postgresql" if os.environ.get("QTESTBED_TEST_PG_DSN") else "sqlite"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--stores", stores],
        capture_output=True,
        text=True,
        timeout=290,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for kind in stores.replace("sqlite", "SQLite").replace("postgresql", "PostgreSQL").split(","):
        for name in ("RSS", "submit p50", "dispatch slowdown"):
            assert re.search(rf"^RATIO {kind} 2,000/100 {name}: [0-9.]+ ", done.stdout, re.M), (
                done.stdout
            )
        restart = rf"^RESTART {kind} 2,000 queued: first start after the fill answered in [0-9.]+ s"
        assert re.search(restart + r".*starts after it: median [0-9.]+ s$", done.stdout, re.M), (
            done.stdout
        )
        rates = re.findall(
            rf"^  {kind} +[0-9,]+ queued: .* dispatch ([0-9.]+) jobs/s", done.stdout, re.M
        )
        assert len(rates) == 2, done.stdout
        assert all(float(rate) > 0 for rate in rates), done.stdout
