"""bench/bench_goodput.py --quick runs start to finish: the offered load steps up against a broker
with real drivers, jobs complete, the overload phase runs on a fresh facility, and the goodput
ratio, admitted latencies and the RSS verdict are printed.

A smoke test only: the quick run's numbers mean nothing, so nothing here checks a timing or a
verdict.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_goodput.py"
NUMBER = r"[0-9]+(?:\.[0-9]+)?"


@pytest.mark.timeout(300)
def test_quick_goodput_bench_exits_cleanly_and_prints_the_ratio() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick"],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    out = done.stdout
    assert re.search(rf"^  step +{NUMBER}/s: offered", out, re.M), out
    assert re.search(r"^  window +1: offered", out, re.M), out
    completed = re.search(
        rf"^OVERLOAD offered {NUMBER} admitted (\d+) .* completed (\d+) ", out, re.M
    )
    assert completed is not None, out
    assert int(completed.group(1)) > 0, out
    assert int(completed.group(2)) > 0, out
    assert re.search(rf"^LATENCY admitted SubmitJob: at the peak step p50 {NUMBER} ms", out, re.M)
    assert re.search(r"^RSS broker process: first .* flat \(within 5%\): (PASS|MISS)$", out, re.M)
    assert re.search(rf"^RATIO goodput overload/peak = {NUMBER} ", out, re.M), out
    assert "ERRORS" not in out, out
