"""bench/bench_appraisal.py --quick runs start to finish and prints its rates and ratio lines.

A smoke test only: the quick run's numbers mean nothing, so nothing here checks a timing.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_appraisal.py"
NUMBER = r"[0-9][0-9,]*(?:\.[0-9]+)?"


@pytest.mark.timeout(120)
def test_quick_appraisal_bench_exits_cleanly_and_prints_the_ratios() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick"],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    out = done.stdout
    for kind in ("ed25519", "ecdsa-p256"):
        ratio = rf"^RATIO appraise/verify {re.escape(kind)} += +{NUMBER} +\(appraise {NUMBER}/CPU-s"
        assert re.search(ratio, out, re.M), (kind, out)
    for name in ("verify", "chain", "appraise"):
        assert len(re.findall(rf"^  {name} +{NUMBER} /CPU-s", out, re.M)) == 2, (name, out)
    assert "ERRORS" not in out, out
