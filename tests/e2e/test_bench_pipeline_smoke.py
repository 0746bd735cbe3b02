"""bench/bench_pipeline.py --quick runs start to finish: a broker process and two driver
processes (1 lease, then 32, the default) drain their queues, every job completed exactly
once, and the drain ratio and busy-fraction lines are printed.

A smoke test only: the quick run's numbers mean nothing, so nothing here checks a timing.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_pipeline.py"


@pytest.mark.timeout(180)
def test_quick_pipeline_bench_drains_both_phases_and_prints_the_figures() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick"],
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for leases in (1, 32):
        line = rf"^  leases {leases}: 60 jobs in .* drain \d+ jobs/s, device busy [0-9.]+, \d+ "
        assert re.search(line, done.stdout, re.M), done.stdout
    assert re.search(r"^RATIO drain 32/1 leases: [0-9.]+$", done.stdout, re.M)
    assert re.search(r"^BUSY with 32 leases: [0-9.]+ ", done.stdout, re.M)
