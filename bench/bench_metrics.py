"""What metrics and anomaly detection cost SubmitJob throughput: the broker as shipped against
the same broker with both replaced by no-ops, in one run.

    .venv/bin/python bench/bench_metrics.py [--quick]

The broker runs embedded in this process (SQLite as `qtestbed init` sets it up, no driver, so
every job is validated, decided, committed with its audit entry and left QUEUED); the load comes
from bench/loadgen.py in its own process (64 calls in flight, alice's certificate). Arms
alternate (shipped, bare, shipped, bare, ...), each on a fresh facility and database, so drift
over the run hits both. "Bare" swaps, on that broker instance only, every metric for an object
whose methods do nothing and every anomaly-monitor entry point for a no-op; nothing in the
product can turn them off. Printed: `RATIO shipped/bare`, the median throughput ratio.

Every loop stops at a count or a time limit, whichever comes first; all on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_broker import FULL, QUICK, SUBMIT_METHOD, Plan, load_config
from bench.harness import Children, Target, Throughput, print_run, run_load
from broker.app import Broker
from qtestbed.testing import UNLIMITED_ADMISSION, LocalFacility

CONCURRENCY = 64
MONITOR_ENTRY_POINTS = (
    "submission",
    "refusal",
    "attestation_failed",
    "measured",
    "canary",
    "export_crossing",
)


class _NullMetric:
    """Accepts every call a prometheus_client metric does, and does nothing."""

    def labels(self, *args: Any, **kwargs: Any) -> _NullMetric:
        return self

    def inc(self, amount: float = 1) -> None:
        return None

    def dec(self, amount: float = 1) -> None:
        return None

    def set(self, value: float) -> None:
        return None

    def observe(self, value: float) -> None:
        return None


def strip(broker: Broker) -> None:
    """Metrics and anomaly detection off, on this broker object only."""
    metrics = broker.metrics
    for name, value in list(vars(metrics).items()):
        if hasattr(value, "labels") or hasattr(value, "inc") or hasattr(value, "observe"):
            setattr(metrics, name, _NullMetric())
    assert broker.components is not None
    anomalies = broker.components.registries.anomalies
    for name in MONITOR_ENTRY_POINTS:
        setattr(anomalies, name, lambda *args, **kwargs: None)


def one_arm(children: Children, root: Path, plan: Plan, *, bare: bool) -> Throughput:
    with LocalFacility(root, limits=UNLIMITED_ADMISSION) as facility:
        facility.start_broker()
        assert facility.embedded is not None
        assert facility.embedded.broker is not None
        if bare:
            strip(facility.embedded.broker)
        assert facility.addresses is not None
        target = Target(
            name="bare" if bare else "shipped",
            address=facility.addresses.grpc,
            method=SUBMIT_METHOD,
            pid=os.getpid(),
        )
        config = load_config(
            target, root, concurrency=CONCURRENCY, channels=plan.channels_per_process, plan=plan
        )
        timeout = plan.warmup_seconds + plan.measure_seconds + 60.0
        run = run_load(children, target, [config], timeout)
    print_run(run)
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one short round (smoke test)")
    args = parser.parse_args(argv)
    plan, rounds = (QUICK, 1) if args.quick else (FULL, 3)
    rates: dict[str, list[float]] = {"shipped": [], "bare": []}
    with tempfile.TemporaryDirectory(prefix="qtestbed-bench-metrics-") as tmp:
        children = Children(Path(tmp))
        try:
            for n in range(rounds):
                for bare in (False, True):
                    root = Path(tmp) / f"round{n}-{'bare' if bare else 'shipped'}"
                    run = one_arm(children, root, plan, bare=bare)
                    if run.errors:
                        print(f"ERRORS in {run.target}: {run.errors}")
                        return 1
                    rates[run.target].append(run.rate)
        finally:
            children.close()
    shipped_rate = statistics.median(rates["shipped"])
    bare_rate = statistics.median(rates["bare"])
    print(
        f"RATIO shipped/bare = {shipped_rate / bare_rate:.3f}  (SubmitJob {shipped_rate:,.1f} "
        f"req/s with metrics and anomaly detection, {bare_rate:,.1f} req/s without; medians of "
        f"{rounds} rounds)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
