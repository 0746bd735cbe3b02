"""bench/bench_decode_fairness.py --quick runs start to finish and prints its p50s and ratio.

A smoke test only: the quick run's numbers mean nothing, so nothing here checks a timing.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_decode_fairness.py"
NUMBER = r"[0-9][0-9,]*(?:\.[0-9]+)?"


@pytest.mark.timeout(240)
def test_quick_decode_fairness_bench_exits_cleanly_and_prints_the_ratio() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick"],
        capture_output=True,
        text=True,
        timeout=220,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    out = done.stdout
    for phase in ("QUIET ", "LOADED"):
        line = rf"^{phase} bob {NUMBER} sequential SubmitJob: p50 {NUMBER} ms"
        assert re.search(line, out, re.M), (phase, out)
    # alice's heavy load ran and was refused past her share at least once.
    assert re.search(rf"^ALICE .*RESOURCE_EXHAUSTED {NUMBER}", out, re.M), out
    assert re.search(rf"^RATIO loaded/quiet bob submit p50 = {NUMBER} ", out, re.M), out
    assert "ERRORS" not in out, out
