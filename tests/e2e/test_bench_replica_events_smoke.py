"""bench/bench_replica_events.py --quick runs start to finish on PostgreSQL: both replicas see
each other's changes and the ratio lines are printed.

A smoke test only: the quick run's numbers mean nothing, so nothing here checks a timing.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_replica_events.py"


@pytest.mark.postgres
@pytest.mark.timeout(180)
def test_quick_replica_events_bench_exits_cleanly_and_prints_the_ratios(pg_dsn: str) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick"],
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
        env={**os.environ, "QTESTBED_TEST_PG_DSN": pg_dsn},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"^RATIO access-seen/notify [0-9.]+$", done.stdout, re.M), done.stdout
    assert re.search(r"^RATIO queue-seen/notify [0-9.]+$", done.stdout, re.M), done.stdout
