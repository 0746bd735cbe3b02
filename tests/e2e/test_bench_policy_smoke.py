"""bench/bench_policy.py --quick runs start to finish and prints its rates and ratio lines.

A smoke test only: the quick run's numbers mean nothing, so nothing here checks a timing.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_policy.py"
NUMBER = r"[0-9][0-9,]*(?:\.[0-9]+)?"


@pytest.mark.timeout(120)
def test_quick_policy_bench_exits_cleanly_and_prints_the_ratios() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick"],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    out = done.stdout
    for name in ("allow", "forbid", "deny"):
        assert re.search(rf"^  decide {name} +{NUMBER} /CPU-s", out, re.M), (name, out)
        ratio = rf"^RATIO json.dumps/decide {name} += {NUMBER} +\(decide {NUMBER}/CPU-s"
        assert re.search(ratio, out, re.M), (name, out)
    assert re.search(rf"^  json.dumps +{NUMBER} /CPU-s", out, re.M), out
    assert "ERRORS" not in out, out
    assert re.search(rf"^SUBMIT {NUMBER} sequential SubmitJob: p50 {NUMBER} ms", out, re.M), out
    assert re.search(rf"^RATIO gate/SubmitJob = {NUMBER} ", out, re.M), out
