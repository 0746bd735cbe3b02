"""How busy a fast device is kept, and how fast its queue drains, with 1 and N leases in flight.

    .venv/bin/python bench/bench_pipeline.py               # about 1 minute
    .venv/bin/python bench/bench_pipeline.py --leases 8    # N (default 32)
    .venv/bin/python bench/bench_pipeline.py --quick       # a smoke run; its numbers mean nothing

A broker process (`qtestbed broker`, the `qtestbed init` facility as shipped: SQLite) and, one
after the other, two `sim-open` driver processes padded to a 2 ms device
(`min_execution_seconds = 0.002`): the baseline holding 1 lease, then one holding N
(`max_leases = N`). For each, alice queues warm-up + measured GHZ-2 jobs while no driver is
attached, the driver is started, every job must reach COMPLETED (exactly once: a job is
COMPLETED with one attempt or fails the run), and the driver is stopped; its `--stats` file
gives each run's start and end on the driver's own clock. Over the measured jobs only (the
warm-up pays Qiskit's and Aer's one-time setup):

    busy fraction  = time the device spent running jobs / (last end - first start)
    drain (jobs/s) = measured jobs / (last end - first start)

Printed: both phases, `RATIO drain N/1` and whether the N-lease busy fraction reaches the
target (0.9). Every wait is bounded in time; the drivers and the broker are stopped at the end.

N defaults to 32: the pipeline has to cover the store's slowest commits, not its usual ones
(the lease write is durable before its grant leaves). On a shared disk a commit now and then
takes tens of milliseconds; 32 leases of a 2 ms device ride over about 80 ms of them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qtestbed.cli.demo import ghz_qasm2
from qtestbed.client import Client, submit_request
from qtestbed.testing import UNLIMITED_ADMISSION, LocalFacility
from qtestbed.v1 import jobs_pb2

DEVICE = "sim-open"
DEVICE_SECONDS = 0.002  # the simulated device's run time per job
TARGET_BUSY = 0.9
BATCH = 100  # the broker's SubmitJobs limit
TERMINAL = {
    jobs_pb2.JOB_STATE_COMPLETED,
    jobs_pb2.JOB_STATE_FAILED,
    jobs_pb2.JOB_STATE_CANCELLED,
    jobs_pb2.JOB_STATE_DENIED,
}


@dataclass(frozen=True, kw_only=True, slots=True)
class Plan:
    jobs: int  # measured jobs per phase
    warmup: int
    limit_s: float  # per phase, for the queue to drain


FULL = Plan(jobs=3000, warmup=30, limit_s=120.0)
QUICK = Plan(jobs=60, warmup=5, limit_s=60.0)


@dataclass(frozen=True, kw_only=True, slots=True)
class Phase:
    leases: int
    jobs: int
    busy_fraction: float
    drain_per_s: float
    span_s: float
    starved: int  # leases that reached the driver with its queue empty


def queue_jobs(alice: Client, count: int) -> list[str]:
    ids: list[str] = []
    payload = ghz_qasm2(2)
    while len(ids) < count:
        batch = [
            submit_request(payload, device_id=DEVICE, shots=10)
            for _ in range(min(BATCH, count - len(ids)))
        ]
        ids += [r.job.job_id for r in alice.submit_many(batch)]
    return ids


def wait_done(alice: Client, ids: list[str], limit_s: float) -> None:
    """Every job terminal, and COMPLETED exactly once (one attempt); else raise."""
    deadline = time.monotonic() + limit_s
    while alice.get_job(ids[-1]).state not in TERMINAL:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the queue did not drain within {limit_s:.0f}s")
        time.sleep(0.1)
    for job_id in ids:
        job = alice.get_job(job_id)
        while job.state not in TERMINAL and time.monotonic() < deadline:
            time.sleep(0.05)
            job = alice.get_job(job_id)
        if job.state != jobs_pb2.JOB_STATE_COMPLETED or job.attempts != 1:
            state = jobs_pb2.JobState.Name(job.state)
            raise RuntimeError(f"job {job_id} ended {state} after {job.attempts} attempt(s)")


def window(runs: list[list[float]], count: int) -> tuple[float, float]:
    """(busy fraction, span seconds) over the last `count` runs the driver reported."""
    measured = runs[-count:]
    if len(measured) < count:
        raise RuntimeError(f"the driver reported {len(measured)} runs, expected {count}")
    span = measured[-1][1] - measured[0][0]
    busy = sum(end - start for start, end in measured)
    return busy / span, span


def phase(facility: LocalFacility, alice: Client, leases: int, plan: Plan) -> Phase:
    ids = queue_jobs(alice, plan.warmup + plan.jobs)
    stats = facility.root / f"driver-stats-{leases}.json"
    driver = facility.start_driver(
        DEVICE,
        extra_config=f"max_leases = {leases}\nmin_execution_seconds = {DEVICE_SECONDS}",
        args=["--stats", str(stats)],
    )
    try:
        wait_done(alice, ids, plan.limit_s)
    finally:
        driver.terminate()
        driver.wait(20)
    report = json.loads(stats.read_text())
    busy, span = window(report["runs"], plan.jobs)
    return Phase(
        leases=leases,
        jobs=plan.jobs,
        busy_fraction=busy,
        drain_per_s=plan.jobs / span,
        span_s=span,
        starved=int(report["starved_leases"]),
    )


def show(p: Phase) -> None:
    print(
        f"  leases {p.leases}: {p.jobs} jobs in {p.span_s:.2f} s on the driver's clock, "
        f"drain {p.drain_per_s:.0f} jobs/s, device busy {p.busy_fraction:.3f}, "
        f"{p.starved} leases reached an empty driver queue",
        flush=True,
    )


def run(root: Path, plan: Plan, leases: int) -> int:
    print(
        f"bench_pipeline: {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} cores; {DEVICE} padded to {DEVICE_SECONDS * 1000:.0f} ms a job; "
        f"{plan.jobs} measured jobs per phase after {plan.warmup} warm-up",
        flush=True,
    )
    timing = {"max_leases_per_driver": leases}
    with LocalFacility(root, timing=timing, limits=UNLIMITED_ADMISSION) as facility:
        facility.start_broker_process()
        alice = facility.client("alice")
        base = phase(facility, alice, 1, plan)
        show(base)
        piped = phase(facility, alice, leases, plan)
        show(piped)
    print(f"RATIO drain {leases}/1 leases: {piped.drain_per_s / base.drain_per_s:.2f}")
    verdict = "meets" if piped.busy_fraction >= TARGET_BUSY else "MISSES"
    print(
        f"BUSY with {leases} leases: {piped.busy_fraction:.3f} ({verdict} the target "
        f"{TARGET_BUSY}); with 1 lease: {base.busy_fraction:.3f}"
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run; numbers mean nothing")
    parser.add_argument("--leases", type=int, default=32, help="leases in flight (default 32)")
    args = parser.parse_args()
    if args.leases < 2:
        parser.error("--leases must be at least 2 (1 is the baseline)")
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        return run(Path(tmp) / "fac", QUICK if args.quick else FULL, args.leases)


if __name__ == "__main__":
    raise SystemExit(main())
