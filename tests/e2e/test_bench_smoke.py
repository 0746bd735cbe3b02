"""bench/bench_broker.py --quick runs start to finish and prints its ratio lines.

A smoke test only: the quick run's numbers mean nothing, so nothing here checks a timing.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_broker.py"
NUMBER = r"-?[0-9]+(?:\.[0-9]+)?"  # a noisy quick run can even go negative


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_quick_bench_exits_cleanly_and_prints_the_ratios() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick"],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    out = done.stdout
    for name in ("broker/echo-aio", "broker/echo-sync", "broker-added/echo-rtt"):
        assert re.search(rf"^RATIO {re.escape(name)} += +{NUMBER} ", out, re.M), (name, out)
    targets = re.findall(rf"^TARGET .*measured {NUMBER} +(PASS|MISS)$", out, re.M)
    assert len(targets) == 2, out
    assert "ERRORS" not in out, out
    assert re.search(r"submit-to-result .*n=[1-9]", out), out


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(400)
def test_quick_bench_of_worker_processes_prints_their_ratios(pg_dsn: str) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--store", "postgresql", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=380,
        check=False,
        env={**os.environ, "QTESTBED_TEST_PG_DSN": pg_dsn},
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    out = done.stdout
    for name in ("broker/echo-sync", "pg-w2/echo-aio", "pg-w2/echo-sync"):
        assert re.search(rf"^RATIO {re.escape(name)} += +{NUMBER} ", out, re.M), (name, out)
    targets = re.findall(rf"^TARGET (\S+):? .*measured {NUMBER} +(PASS|MISS)$", out, re.M)
    assert [name for name, _ in targets] == ["broker:", "pg-w2:", "broker-added", "broker-added"]
    assert "  -- pg-w2" in out, out
    assert "ERRORS" not in out, out
