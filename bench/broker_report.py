"""What bench_broker.py prints at the end: absolute numbers, the ratios, and the targets."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from bench.harness import Throughput, percentile

CONCURRENCY = 64
TARGET_THROUGHPUT_RATIO = 0.5
TARGET_ADDED_RTTS = 10.0
BUSY_MACHINE_CORES = 0.3


@dataclass(frozen=True, kw_only=True, slots=True)
class Latency:
    """Per job (seconds): submit to COMPLETED, the SubmitJob call alone, and the run time the
    driver itself reported for its backend call (JobResult.execution_seconds)."""

    total: list[float]
    submit: list[float]
    driver_run: list[float]
    machine_cores: float = 0.0  # all CPU busy on the machine meanwhile, in cores


@dataclass(frozen=True, kw_only=True, slots=True)
class Report:
    runs: list[Throughput]
    submit_rtt: Throughput
    echo_rtt: dict[str, Throughput]
    latency: Latency
    aer: list[float]
    aer_machine_cores: float
    # Submit-to-result per broker set-up measured ("broker": SQLite, one process; "pg-wN").
    latencies: dict[str, Latency] = field(default_factory=dict)


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


def report_throughput(runs: list[Throughput]) -> None:
    def run_of(name: str, processes: int) -> Throughput:
        return next(r for r in runs if r.target == name and r.processes == processes)

    counts = sorted({r.processes for r in runs})
    peak = {n: max(run_of("echo-aio", n).rate, run_of("echo-sync", n).rate) for n in counts}
    chosen = max(counts, key=lambda n: peak[n])
    tried = ", ".join(f"{peak[n]:.0f} req/s with {n}" for n in counts)
    print(
        f"  load generator: {chosen} process(es), {CONCURRENCY} calls in flight in all "
        f"(faster echo peaked at {tried} process(es)); it shares the "
        f"{os.cpu_count()} cores with the server under test"
    )
    faster = max((run_of("echo-aio", chosen), run_of("echo-sync", chosen)), key=lambda r: r.rate)
    brokers = dict.fromkeys(r.target for r in runs if not r.target.startswith("echo"))
    for name in brokers:  # "broker" (SQLite, one process), then "pg-wN" (N worker processes)
        broker = run_of(name, chosen)
        for echo_name in ("echo-aio", "echo-sync"):
            echo = run_of(echo_name, chosen)
            ratio = broker.rate / echo.rate if echo.rate else 0.0
            print(
                f"RATIO {name}/{echo_name:<9} = {ratio:6.3f}   "
                f"({name} {broker.rate:.1f} req/s / {echo_name} {echo.rate:.1f} req/s)"
            )
        ratio = broker.rate / faster.rate if faster.rate else 0.0
        print(
            f"TARGET {name}: durable SubmitJob throughput >= {TARGET_THROUGHPUT_RATIO:.2f} x "
            f"faster echo ({faster.target}): measured {ratio:.3f}   "
            f"{_verdict(ratio >= TARGET_THROUGHPUT_RATIO)}"
        )
        if broker.errors:
            print(f"  WARNING: {name} refused calls: {broker.errors}")
    busy = max(run.other_cpu for run in runs)
    if busy > BUSY_MACHINE_CORES:
        print(
            f"  NOTE: up to {busy:.2f} cores went to the rest of the machine during a run "
            "(kernel networking, other processes): on 2 cores, other work skews these numbers"
        )


def report_latency(report: Report) -> None:
    for name, latency in (report.latencies or {"broker": report.latency}).items():
        print(f"  -- {name}")
        _report_one_latency(report, latency)


def _report_one_latency(report: Report, latency: Latency) -> None:
    total, submit = latency.total, latency.submit
    rtt = report.echo_rtt["echo-aio"]
    aer_p50 = percentile(report.aer, 0.5)
    added = percentile(total, 0.5) - aer_p50
    rtt_s = rtt.p50_ms / 1e3
    print(
        f"  submit-to-result (SubmitJob call -> WatchJob reports COMPLETED), n={len(total)}: "
        f"p50 {_ms(percentile(total, 0.5))}, p99 {_ms(percentile(total, 0.99))} "
        f"(of which the SubmitJob call: p50 {_ms(percentile(submit, 0.5))}); "
        f"machine CPU busy meanwhile {latency.machine_cores:.2f} cores"
    )
    print(
        f"  direct Aer (AerIdealBackend.run: transpile + run, 1 thread), n={len(report.aer)}: "
        f"p50 {_ms(aer_p50)}, p99 {_ms(percentile(report.aer, 0.99))}; "
        f"machine CPU busy meanwhile {report.aer_machine_cores:.2f} cores"
    )
    outside = [t - r for t, r in zip(total, latency.driver_run, strict=True)]
    print(
        f"  the driver's own timing of its backend call (JobResult.execution_seconds): "
        f"p50 {_ms(percentile(latency.driver_run, 0.5))}; submit-to-result minus it, "
        f"per job: p50 {_ms(percentile(outside, 0.5))}, p99 {_ms(percentile(outside, 0.99))}"
    )
    for name, run in report.echo_rtt.items():
        print(
            f"  {name} round trip (sequential unary, n={run.requests}): "
            f"p50 {run.p50_ms:.3f} ms, p99 {run.p99_ms:.3f} ms"
        )
    seq = report.submit_rtt
    print(
        f"  broker SubmitJob round trip (sequential, empty queue, n={seq.requests}): "
        f"p50 {seq.p50_ms:.3f} ms, p99 {seq.p99_ms:.3f} ms"
    )
    print(f"  broker-added time = latency p50 - direct Aer p50 = {_ms(added)}")
    ratio = added / rtt_s if rtt_s else 0.0
    print(
        f"RATIO broker-added/echo-rtt = {ratio:6.1f}   "
        f"({_ms(added)} / echo-aio round trip p50 {rtt.p50_ms:.3f} ms)"
    )
    print(
        f"TARGET broker-added time <= {TARGET_ADDED_RTTS:.0f} echo round trips: "
        f"measured {ratio:.1f}   {_verdict(ratio <= TARGET_ADDED_RTTS)}"
    )
