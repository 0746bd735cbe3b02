"""bench/bench_hidden.py --quick runs start to finish and prints a table row and a ratio line
for every RPC it compares.

A smoke test only: the quick run's numbers mean nothing, so nothing here checks a timing. The
bench itself refuses to time anything (and exits 1) unless every answer is the same NOT_FOUND.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_hidden.py"
NUMBER = r"[+-]?[0-9][0-9,]*(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?"
COMPARED = {
    "GetDevice": "hidden",
    "SubmitJob": "hidden",
    "SubmitJobs": "hidden",
    "OpenSession": "hidden",
    "GetJob": "foreign",
    "WatchJob": "foreign",
    "CancelJob": "foreign",
    "GetResult": "foreign",
    "GetResultProof": "foreign",
    "GetSession": "foreign",
    "CloseSession": "foreign",
}


@pytest.mark.timeout(120)
def test_quick_hidden_bench_exits_cleanly_and_prints_every_comparison() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--seed", "7"],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    out = done.stdout
    assert "ERRORS" not in out, out
    assert "call order seed 7" in out, out
    for rpc, label in COMPARED.items():
        ratio = (
            rf"^RATIO {rpc} {label}/absent = {NUMBER}  \(control absent/absent = {NUMBER}; "
            rf"median difference {NUMBER} us against {NUMBER} us; "
            rf"sign test p {NUMBER} against {NUMBER}; Wilcoxon p {NUMBER} against {NUMBER}\)$"
        )
        assert re.search(ratio, out, re.M), (rpc, out)
        assert re.search(rf"^  {rpc} +{label}/absent +[0-9]+ ", out, re.M), (rpc, out)
