"""Goodput at twice the peak: does the broker keep completing work when offered more than it can do?

    .venv/bin/python bench/bench_goodput.py                  # 10 minutes at 2x, ~13 minutes in all
    .venv/bin/python bench/bench_goodput.py --seconds 120    # a shorter overload phase
    .venv/bin/python bench/bench_goodput.py --quick          # a smoke run; numbers mean nothing
    .venv/bin/python bench/bench_goodput.py --facility-limit peak  # facility bucket at the peak

A broker process (`qtestbed init` facility, SQLite as shipped) with real driver processes on both
simulated devices (ideal Aer `sim-open`, noisy Aer `sim-restricted`, no execution padding). The
per-principal token bucket's rate is raised, as only three researchers exist to make the load
and this bench measures the broker, not one researcher's limit; the facility-wide bucket, the
store-queue shedding and everything else are as shipped, except as (2) says. `open_loop.py`
(its own process) sends SubmitJob open-loop (GHZ-2, 10 shots), each call on a lane drawn at
random (seeded) from alice -> sim-open, bob -> sim-restricted, olivia -> either: see
open_loop.py for why not in turn.

1. **Peak**: offered load steps up (x1.4 a step) until goodput stops following it. Goodput is
   jobs completed per second over the step (the broker's `qtestbed_job_outcomes{outcome=
   "completed"}`, scraped every `SAMPLE_S`); the peak is the highest step's goodput.
2. **Overload**: 2x the peak offered for `--seconds` (default 600), in one-minute windows, on
   a fresh facility whose devices each bound their queue (`[admission] max_queued_per_device`
   = DEVICE_BACKLOG_S of the peak; `--facility-limit peak` sizes the facility-wide bucket to
   the peak instead, `shipped` leaves admission as shipped). Printed per window: offered,
   admitted, shed (RESOURCE_EXHAUSTED with a retry delay), other errors, goodput, admitted
   calls' p50/p99, the queue depth, the broker's RSS, and the admitted calls' share by device.
Then: `RATIO goodput overload/peak` (target >= 0.9); the broker process's RSS (its own, the
decoder children apart), first minute against last minute, and the least-squares slope over the
phase; RSS is called flat when the last minute's mean is within 5% of the first minute's and the
slope, over the whole phase, adds up to less than 5% of the first minute's mean.

Every step stops at its time; the generator bounds its calls in flight; every process is stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_streams import code_under_test
from bench.harness import Children, machine_busy_seconds, read_line, tree_cpu_seconds
from broker.settings import LARGEST_BATCH
from qtestbed.testing import LocalFacility

OPEN_LOOP = Path(__file__).resolve().parent / "open_loop.py"


GOODPUT_TARGET = 0.9
RSS_TOLERANCE = 0.05
SAMPLE_S = 2.0
STEP_FACTOR = 1.4
SATURATED = 0.85  # a step whose goodput is below this share of its offered load
# The overload phase bounds each device's queue to this many seconds of the measured peak.
DEVICE_BACKLOG_S = 10.0
LANES = (
    ("alice", "sim-open"),
    ("bob", "sim-restricted"),
    ("olivia", "sim-open"),
    ("olivia", "sim-restricted"),
)
# Three researchers make the load: their own buckets out of the way (see the docstring).
PRINCIPAL_BUCKET = {"principal_jobs_per_second": 100000.0}
COMPLETED = re.compile(
    r'^qtestbed_job_outcomes_total\{[^}]*outcome="completed"[^}]*\} (\S+)$', re.M
)
QUEUED = re.compile(r"^qtestbed_queue_depth\{[^}]*\} (\S+)$", re.M)


@dataclass(frozen=True, kw_only=True, slots=True)
class Plan:
    first_rate: float
    step_s: float
    max_steps: int
    overload_s: float
    window_s: float


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # time.monotonic(), the same clock in every process of this machine
    completed: float
    queued: float
    rss_mib: float
    cpu: dict[str, float]  # CPU seconds so far: each process group's, and the whole machine's


class Sampler:
    """Every SAMPLE_S: the broker's completed-job counter and queue depth (a real scrape of
    /metrics) and its process's resident set size."""

    def __init__(self, facility: LocalFacility, pid: int, groups: dict[str, list[int]]) -> None:
        self.samples: list[Sample] = []
        self._facility, self._pid, self._groups = facility, pid, groups
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self.take()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self.take()

    def take(self) -> Sample:
        text = self._facility.scrape()
        rss_kib = next(
            int(line.split()[1])
            for line in Path(f"/proc/{self._pid}/status").read_text().splitlines()
            if line.startswith("VmRSS:")
        )
        sample = Sample(
            at=time.monotonic(),
            completed=sum(float(v) for v in COMPLETED.findall(text)),
            queued=sum(float(v) for v in QUEUED.findall(text)),
            rss_mib=rss_kib / 1024,
            cpu={
                **{k: sum(tree_cpu_seconds(p) for p in pids) for k, pids in self._groups.items()},
                "machine": machine_busy_seconds(),
            },
        )
        self.samples.append(sample)
        return sample

    def completed_at(self, at: float) -> float:
        """The completed counter at `at`, interpolated between the samples around it."""
        before = [s for s in self.samples if s.at <= at] or self.samples[:1]
        after = [s for s in self.samples if s.at >= at] or self.samples[-1:]
        a, b = before[-1], after[0]
        if b.at == a.at:
            return a.completed
        return a.completed + (b.completed - a.completed) * (at - a.at) / (b.at - a.at)

    def cores(self, started: float, ended: float) -> str:
        """CPU cores each group used between the samples nearest `started` and `ended`."""
        a = min(self.samples, key=lambda x: abs(x.at - started))
        b = min(self.samples, key=lambda x: abs(x.at - ended))
        if b.at <= a.at:
            return "CPU: too short to tell"
        used = {k: (b.cpu[k] - a.cpu[k]) / (b.at - a.at) for k in a.cpu}
        rest = used.pop("machine") - sum(used.values())
        groups = ", ".join(f"{k} {v:.2f}" for k, v in used.items())
        return f"CPU cores busy: {groups}, rest of machine {max(rest, 0.0):.2f}"

    def goodput(self, started: float, ended: float) -> float:
        while self.samples[-1].at < ended:  # the window's end must be sampled
            time.sleep(0.2)
        return (self.completed_at(ended) - self.completed_at(started)) / (ended - started)


@dataclass(frozen=True, slots=True)
class Window:
    step: dict[str, Any]
    goodput: float
    last: Sample
    cores: str

    def line(self, name: str) -> str:
        s, seconds = self.step, self.step["ended"] - self.step["started"]
        others = f", ERRORS {s['errors']}" if s["errors"] or s["not_sent"] else ""
        return (
            f"  {name} offered {s['offered'] / seconds:6.1f}/s  admitted "
            f"{s['admitted'] / seconds:6.1f}/s  shed {s['refused_with_retry']:5d}  goodput "
            f"{self.goodput:6.1f}/s  admitted p50 {s['p50_ms']:6.1f} ms p99 {s['p99_ms']:7.1f} ms"
            f"  queued {self.last.queued:6.0f}  RSS {self.last.rss_mib:6.1f} MiB{others}"
            + (f" (not sent {s['not_sent']})" if s["not_sent"] else "")
            + f"\n{'':16}admitted by device: {self.mix()}; {self.cores}"
        )

    def mix(self) -> str:
        by_device: dict[str, int] = self.step["admitted_by_device"]
        total = sum(by_device.values()) or 1
        return ", ".join(f"{d} {n / total:.0%}" for d, n in sorted(by_device.items()))


def step(gen: Any, sampler: Sampler, rate: float, seconds: float) -> Window:
    gen.stdin.write(f"{rate} {seconds}\n".encode())
    gen.stdin.flush()
    result: dict[str, Any] = json.loads(read_line(gen, seconds + 120))
    goodput = sampler.goodput(result["started"], result["ended"])
    cores = sampler.cores(result["started"], result["ended"])
    return Window(result, goodput, sampler.samples[-1], cores)


def drain(sampler: Sampler, limit_s: float) -> None:
    """Wait (at most `limit_s`) for the queues to empty, so a step starts on no backlog."""
    deadline = time.monotonic() + limit_s
    while sampler.samples[-1].queued > 0 and time.monotonic() < deadline:
        time.sleep(SAMPLE_S)


def find_peak(gen: Any, sampler: Sampler, plan: Plan) -> tuple[float, Window]:
    """Step the offered load up until goodput stops following it; the best step's goodput."""
    best: Window | None = None
    rate = plan.first_rate
    # Drivers' first jobs (imports, Aer's first runs) are slow: one step of warm-up first.
    print(step(gen, sampler, rate, plan.step_s).line("warm-up       "), flush=True)
    for _ in range(plan.max_steps):
        drain(sampler, 60)
        window = step(gen, sampler, rate, plan.step_s)
        print(window.line(f"step {rate:6.1f}/s:"), flush=True)
        if best is None or window.goodput > best.goodput:
            best = window
        if window.goodput < SATURATED * rate:  # saturated: more offered is not more done
            break
        rate *= STEP_FACTOR
    assert best is not None
    return best.goodput, best


def rss_verdict(samples: list[Sample], started: float, ended: float) -> str:
    inside = [s for s in samples if started <= s.at <= ended]
    minute = min(60.0, (ended - started) / 3)
    first = statistics.mean(s.rss_mib for s in inside if s.at < started + minute)
    last = statistics.mean(s.rss_mib for s in inside if s.at > ended - minute)
    slope = statistics.linear_regression([s.at for s in inside], [s.rss_mib for s in inside])[0]
    grown = slope * (ended - started)
    flat = abs(last - first) <= RSS_TOLERANCE * first and grown <= RSS_TOLERANCE * first
    return (
        f"RSS broker process: first {minute:.0f} s mean {first:.1f} MiB, last {minute:.0f} s "
        f"mean {last:.1f} MiB, slope {slope * 60:+.2f} MiB/min ({grown:+.1f} MiB over the "
        f"phase); flat (within {RSS_TOLERANCE:.0%}): {'PASS' if flat else 'MISS'}"
    )


def overload(gen: Any, sampler: Sampler, rate: float, plan: Plan) -> list[Window]:
    windows: list[Window] = []
    remaining = plan.overload_s
    while remaining > 0:
        seconds = min(plan.window_s, remaining)
        windows.append(step(gen, sampler, rate, seconds))
        print(windows[-1].line(f"window {len(windows):2d}:"), flush=True)
        remaining -= seconds
    return windows


def report(peak: float, best: Window, windows: list[Window], sampler: Sampler) -> None:
    started, ended = windows[0].step["started"], windows[-1].step["ended"]
    done = sampler.completed_at(ended) - sampler.completed_at(started)
    goodput = done / (ended - started)
    shed = sum(w.step["refused_with_retry"] for w in windows)
    errors = sum(sum(w.step["errors"].values()) + w.step["not_sent"] for w in windows)
    offered = sum(w.step["offered"] for w in windows)
    admitted = sum(w.step["admitted"] for w in windows)
    delays = [w.step["retry_delay_p50_s"] for w in windows if w.step["refused_with_retry"]]
    print(
        f"OVERLOAD offered {offered} admitted {admitted} shed {shed} (RESOURCE_EXHAUSTED with "
        f"a retry delay; median delay {statistics.median(delays) if delays else 0:.3f} s) "
        f"other errors {errors}; completed {done:.0f} in {ended - started:.0f} s"
    )
    print(
        f"LATENCY admitted SubmitJob: at the peak step p50 {best.step['p50_ms']:.1f} ms p99 "
        f"{best.step['p99_ms']:.1f} ms; overload windows p50 median "
        f"{statistics.median(w.step['p50_ms'] for w in windows):.1f} ms, worst p99 "
        f"{max(w.step['p99_ms'] for w in windows):.1f} ms"
    )
    print(rss_verdict(sampler.samples, started, ended))
    ratio = goodput / peak
    verdict = "PASS" if ratio >= GOODPUT_TARGET else "MISS"
    print(
        f"RATIO goodput overload/peak = {ratio:.2f}  ({goodput:.1f}/s against {peak:.1f}/s; "
        f"target >= {GOODPUT_TARGET}: {verdict})"
    )


@contextlib.contextmanager
def facility_under_load(root: Path, admission: dict[str, float]) -> Iterator[tuple[Any, Sampler]]:
    """A broker process with both drivers attested, the open-loop generator ready, sampling."""
    with LocalFacility(root, limits={"admission": admission}) as facility:
        addresses = facility.start_broker_process()
        for device in ("sim-open", "sim-restricted"):
            facility.start_driver(device)
            facility.wait_available(facility.client("olivia"), device)
        assert facility.broker_process is not None
        config = {
            "broker": addresses.grpc,
            "lanes": [(str(root / "users" / f"{who}.toml"), device) for who, device in LANES],
            "max_in_flight": 2000,
        }
        children = Children(root)
        try:
            gen = children.start("open-loop", [str(OPEN_LOOP), "--config", json.dumps(config)])
            if (line := read_line(gen, 60)) != '{"event": "ready"}':
                raise RuntimeError(f"the load generator did not get ready: {line}")
            groups = {
                "broker (with decoder children)": [facility.broker_process.pid],
                "drivers": [d.pid for d in facility.drivers],
                "load generator": [gen.pid],
            }
            with Sampler(facility, facility.broker_process.pid, groups) as sampler:
                yield gen, sampler
        finally:
            children.close()


def overload_limits(peak: float, facility_limit: str) -> dict[str, float]:
    """[admission] for the overload phase: each device's queue bounded to DEVICE_BACKLOG_S of
    the measured peak, at least the largest batch (the facility bucket as shipped); everything
    as shipped; or the facility-wide bucket sized to the measured peak (rate = peak, burst =
    one second of it, at least the largest batch)."""
    if facility_limit == "shipped":
        return PRINCIPAL_BUCKET
    if facility_limit == "device":
        bound = max(LARGEST_BATCH, round(peak * DEVICE_BACKLOG_S))  # the least a bound may be
        return {**PRINCIPAL_BUCKET, "max_queued_per_device": bound}
    return {
        **PRINCIPAL_BUCKET,
        "facility_jobs_per_second": round(peak, 1),
        "facility_burst": max(LARGEST_BATCH, round(peak)),
    }


def run(tmp: Path, plan: Plan, facility_limit: str) -> int:
    print("PEAK (offered load stepping up; goodput = jobs completed per second)", flush=True)
    with facility_under_load(tmp / "peak", PRINCIPAL_BUCKET) as (gen, sampler):
        peak, best = find_peak(gen, sampler, plan)
    limits = overload_limits(peak, facility_limit)
    print(
        f"OVERLOAD at 2 x {peak:.1f} = {2 * peak:.1f}/s offered for {plan.overload_s:.0f} s, on a "
        f"fresh facility; [admission] facility_jobs_per_second "
        f"{limits.get('facility_jobs_per_second', 'as shipped')}, facility_burst "
        f"{limits.get('facility_burst', 'as shipped')}, max_queued_per_device "
        f"{limits.get('max_queued_per_device', 'as shipped')}",
        flush=True,
    )
    with facility_under_load(tmp / "overload", limits) as (gen, sampler):
        step(gen, sampler, plan.first_rate, plan.step_s)  # the drivers' first jobs are slow
        drain(sampler, 60)
        windows = overload(gen, sampler, 2 * peak, plan)
    report(peak, best, windows, sampler)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="short steps: a smoke test")
    parser.add_argument("--seconds", type=float, help="the overload phase's length (default 600)")
    parser.add_argument(
        "--facility-limit",
        choices=("device", "peak", "shipped"),
        default="device",
        help=(
            "the overload facility's admission: each device's queue bounded (device), the "
            "facility-wide bucket sized to the peak (peak), or as shipped"
        ),
    )
    args = parser.parse_args(argv)
    if args.quick:
        plan = Plan(first_rate=10.0, step_s=3.0, max_steps=3, overload_s=9.0, window_s=3.0)
    else:
        plan = Plan(first_rate=20.0, step_s=15.0, max_steps=10, overload_s=600.0, window_s=60.0)
    if args.seconds:
        plan = dataclasses.replace(plan, overload_s=args.seconds)
    kind = "quick smoke run: numbers mean nothing" if args.quick else "full"
    print(
        f"qtestbed goodput bench ({kind})\n"
        f"  code: {code_under_test()}\n"
        f"  {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start; steps of "
        f"{plan.step_s:.0f} s from {plan.first_rate:.0f}/s, then 2 x peak for "
        f"{plan.overload_s:.0f} s",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="qtestbed-bench-goodput-") as tmp:
        return run(Path(tmp), plan, args.facility_limit)


if __name__ == "__main__":
    sys.exit(main())
