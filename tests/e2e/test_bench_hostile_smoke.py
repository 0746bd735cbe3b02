"""bench/bench_hostile.py --quick runs start to finish: alice's streams open and see bob's
submits move their jobs, her parser-heavy load runs and is refused past her share, and bob's
p50s and the ratio are printed.

A smoke test only: the quick run's numbers mean nothing, so nothing here checks a timing.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_hostile.py"
NUMBER = r"[0-9][0-9,]*(?:\.[0-9]+)?"


@pytest.mark.timeout(240)
def test_quick_hostile_bench_exits_cleanly_and_prints_the_ratio() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick"],
        capture_output=True,
        text=True,
        timeout=220,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    out = done.stdout
    for phase in ("QUIET ", "LOADED", "AFTER "):
        line = rf"^{phase} bob {NUMBER} sequential SubmitJob: p50 {NUMBER} ms"
        assert re.search(line, out, re.M), (phase, out)
    assert re.search(rf"^ALICE  parser load: .*RESOURCE_EXHAUSTED {NUMBER}", out, re.M), out
    held = re.search(r"^ALICE  60 streams held: updates (\d+) failed (\d+)", out, re.M)
    assert held is not None, out
    assert int(held.group(1)) > 0
    assert held.group(2) == "0"
    assert re.search(rf"^RATIO loaded/quiet bob submit p50 = {NUMBER} ", out, re.M), out
    assert "ERRORS" not in out, out
