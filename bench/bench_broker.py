"""The broker's own cost, as ratios to bare gRPC and to a direct Aer run, from one run here.

    .venv/bin/python bench/bench_broker.py [--quick] [--store postgresql --workers 1,2]
        [--channels N]

Phase 1, durable SubmitJob throughput: 64 calls in flight from bench/loadgen.py (grpc.aio, a few
channels, each its own TCP connection) against, each in its own process and under the same
mutual TLS (the facility's CA, server certificate and alice's client certificate):
  (a) bench/echo_server.py --mode aio   (grpc.aio, returns the request bytes),
  (b) bench/echo_server.py --mode sync  (grpc.server(ThreadPoolExecutor)),
  (c) the broker (`qtestbed broker` via LocalFacility.start_broker_process: SQLite, WAL,
      synchronous=FULL as shipped, no driver attached, so every job is validated, decided,
      committed with its audit entry, and stays QUEUED; each broker run starts on an empty
      database, restarted, so no run inherits the previous run's queue).
  (d) with `--store postgresql --workers 1,2`: the broker as `[server] workers = N` worker
      processes sharing its gRPC port (SO_REUSEPORT), on a fresh schema of the PostgreSQL
      database QTESTBED_TEST_PG_DSN names, for each N (bench/broker_workers.py).
The same generator, sending the same SubmitJobRequest bytes, drives all of them. It runs as one
and as two processes (the machine has 2 cores, shared by generator and server); the ratios use
the process count at which the faster echo server peaked.

Phase 2, submit-to-result latency: a fresh broker (empty database) with the `sim-open` driver
(ideal Aer) attached; sequential GHZ-5 / 1,000-shot OpenQASM 2 jobs, each timed from the
SubmitJob call until the WatchJob stream reports COMPLETED. Against it: the same circuit run
directly through drivers.backends.AerIdealBackend in this process (transpile + Aer, one
thread), and the sequential round trip of one unary call to the aio echo server. The broker's
added time is latency p50 - direct Aer p50, printed in echo round trips. Also printed: the run
time the driver itself reported (JobResult.execution_seconds, fetched after the clock stopped),
which splits the added time into "outside the backend call" and "slower Aer in the driver".
With --workers, phase 2 runs again on the PostgreSQL broker with the most workers asked for.

Every loop stops at a count or a time limit, whichever comes first; everything listens on
127.0.0.1 on OS-picked ports; every process started here is stopped on exit (also on Ctrl-C).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Run as a script, this file's folder is on sys.path but the repository root is not; the root
# makes `bench` a package to import from, and keeps the code under test the code next to it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc

from bench.broker_report import (
    CONCURRENCY,
    Latency,
    Report,
    report_latency,
    report_throughput,
)
from bench.broker_workers import fresh_schema, stop_broker, workers_broker
from bench.harness import (
    BENCH_DIR,
    Children,
    Target,
    Throughput,
    machine_busy_seconds,
    print_run,
    read_line,
    run_load,
)
from qtestbed.cli.demo import ghz_qasm2
from qtestbed.client import Client
from qtestbed.testing import UNLIMITED_ADMISSION, LocalFacility
from qtestbed.v1 import jobs_pb2

REPO = Path(__file__).resolve().parents[1]
ECHO_METHOD = "/bench.Echo/Echo"
SUBMIT_METHOD = "/qtestbed.v1.JobService/SubmitJob"
DEVICE = "sim-open"
SHOTS = 1000
QUBITS = 5
STARTUP_TIMEOUT_S = 60.0
DB_FILES = ("broker.db", "broker.db-wal", "broker.db-shm")  # the store `qtestbed init` sets up


@dataclass(frozen=True, kw_only=True, slots=True)
class Plan:
    """How much of each phase to run; every phase is bounded by a count and by seconds."""

    loadgen_processes: tuple[int, ...]
    channels_per_process: int
    warmup_requests: int
    warmup_seconds: float
    measure_requests: int
    measure_seconds: float
    rtt_requests: int
    rtt_seconds: float
    latency_jobs: int
    latency_seconds: float
    aer_runs: int
    aer_seconds: float


FULL = Plan(
    loadgen_processes=(1, 2),
    channels_per_process=4,
    warmup_requests=2_000,
    warmup_seconds=3.0,
    measure_requests=300_000,
    measure_seconds=15.0,
    rtt_requests=3_000,
    rtt_seconds=5.0,
    latency_jobs=100,
    latency_seconds=120.0,
    aer_runs=100,
    aer_seconds=30.0,
)
QUICK = Plan(
    loadgen_processes=(1,),
    channels_per_process=2,
    warmup_requests=16,
    warmup_seconds=0.5,
    measure_requests=200,
    measure_seconds=1.0,
    rtt_requests=30,
    rtt_seconds=0.5,
    latency_jobs=2,
    latency_seconds=30.0,
    aer_runs=3,
    aer_seconds=5.0,
)


def start_echo(children: Children, mode: str, root: Path) -> subprocess.Popen[bytes]:
    return children.start(
        f"echo-{mode}",
        [
            str(BENCH_DIR / "echo_server.py"),
            f"--mode={mode}",
            f"--ca={root / 'ca' / 'ca.pem'}",
            f"--cert={root / 'broker' / 'broker.pem'}",
            f"--key={root / 'broker' / 'broker.key'}",
        ],
    )


def echo_target(name: str, proc: subprocess.Popen[bytes]) -> Target:
    line = read_line(proc, STARTUP_TIMEOUT_S)
    if not line.startswith("PORT "):
        raise RuntimeError(f"echo server {name} said {line!r} instead of its port")
    return Target(
        name=name, address=f"127.0.0.1:{line.split()[1]}", method=ECHO_METHOD, pid=proc.pid
    )


def load_config(
    target: Target, root: Path, *, concurrency: int, channels: int, plan: Plan, rtt: bool = False
) -> dict[str, Any]:
    users = root / "users"
    return {
        "target": target.address,
        "method": target.method,
        "ca": str(root / "ca" / "ca.pem"),
        "cert": str(users / "alice.pem"),
        "key": str(users / "alice.key"),
        "concurrency": concurrency,
        "channels": channels,
        "warmup_requests": min(plan.warmup_requests, 200) if rtt else plan.warmup_requests,
        "warmup_seconds": plan.warmup_seconds,
        "max_requests": plan.rtt_requests if rtt else plan.measure_requests,
        "max_seconds": plan.rtt_seconds if rtt else plan.measure_seconds,
    }


def fresh_broker(facility: LocalFacility) -> Target:
    """(Re)start the broker process on an empty database, so no run inherits a long queue."""
    stop_broker(facility, grace=30.0)
    for name in DB_FILES:
        (facility.root / name).unlink(missing_ok=True)
    addresses = facility.start_broker_process()
    assert facility.broker_process is not None
    return Target(
        name="broker", address=addresses.grpc, method=SUBMIT_METHOD, pid=facility.broker_process.pid
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class Workers:
    """--store postgresql --workers N,...: the database and the worker counts to measure."""

    dsn: str
    counts: tuple[int, ...]


def throughput_runs(
    children: Children,
    echoes: list[Target],
    facility: LocalFacility,
    plan: Plan,
    workers: Workers | None,
) -> list[Throughput]:
    runs: list[Throughput] = []
    timeout = plan.warmup_seconds + plan.measure_seconds + STARTUP_TIMEOUT_S
    for processes in plan.loadgen_processes:
        lanes = CONCURRENCY // processes

        def measure(target: Target, lanes: int = lanes, processes: int = processes) -> None:
            config = load_config(
                target,
                facility.root,
                concurrency=lanes,
                channels=plan.channels_per_process,
                plan=plan,
            )
            run = run_load(children, target, [config] * processes, timeout)
            print_run(run)
            runs.append(run)

        for target in [*echoes, fresh_broker(facility)]:
            measure(target)
        if workers is not None:
            for count in workers.counts:
                with workers_broker(facility, workers.dsn, count) as target:
                    measure(target)
    return runs


def sequential(children: Children, target: Target, root: Path, plan: Plan) -> Throughput:
    """One call at a time on one channel: the round trip, not the throughput."""
    config = load_config(target, root, concurrency=1, channels=1, plan=plan, rtt=True)
    timeout = plan.warmup_seconds + plan.rtt_seconds + STARTUP_TIMEOUT_S
    return run_load(children, target, [config], timeout)


def one_job(client: Client, payload: bytes) -> tuple[float, float, float]:
    """(SubmitJob call, SubmitJob call until WatchJob says COMPLETED, the driver's own run
    time), in seconds; the result is fetched after the clock stopped."""
    began = time.perf_counter()
    job = client.submit(payload, device_id=DEVICE, shots=SHOTS, fmt="qasm2").job
    submitted = time.perf_counter()
    done = 0.0
    for update in client.watch(job.job_id, timeout=60.0):
        if update.state == jobs_pb2.JOB_STATE_COMPLETED:
            done = time.perf_counter()
        elif update.state in (jobs_pb2.JOB_STATE_FAILED, jobs_pb2.JOB_STATE_DENIED):
            raise RuntimeError(f"job {job.job_id} ended {update.state}: {update.reason}")
    if not done:
        raise RuntimeError(f"job {job.job_id}: the WatchJob stream ended before COMPLETED")
    driver_run = float(client.result(job.job_id).execution_seconds)
    return submitted - began, done - began, driver_run


def submit_to_result(client: Client, plan: Plan) -> Latency:
    payload = ghz_qasm2(QUBITS)
    for _ in range(2):  # the driver's first run pays Qiskit's and Aer's one-time setup
        one_job(client, payload)
    total, submit, driver_run = [], [], []
    began, busy = time.monotonic(), machine_busy_seconds()
    for _ in range(plan.latency_jobs):
        if time.monotonic() - began > plan.latency_seconds:
            break
        times = one_job(client, payload)
        submit.append(times[0])
        total.append(times[1])
        driver_run.append(times[2])
    cores = (machine_busy_seconds() - busy) / max(time.monotonic() - began, 1e-9)
    return Latency(total=total, submit=submit, driver_run=driver_run, machine_cores=cores)


def direct_aer(plan: Plan) -> tuple[list[float], float]:
    """AerIdealBackend.run (transpile + AerSimulator, one thread), as the driver calls it;
    with the cores the whole machine kept busy meanwhile."""
    from qiskit import qasm2

    from drivers.backends import AerIdealBackend

    backend = AerIdealBackend(QUBITS)
    source = ghz_qasm2(QUBITS).decode()  # parsed once, outside the clock, as the driver parses it
    circuit = qasm2.loads(source, custom_instructions=qasm2.LEGACY_CUSTOM_INSTRUCTIONS)
    for _ in range(3):
        backend.run(circuit, SHOTS)
    samples: list[float] = []
    started, busy = time.monotonic(), machine_busy_seconds()
    for _ in range(plan.aer_runs):
        if time.monotonic() - started > plan.aer_seconds:
            break
        began = time.perf_counter()
        backend.run(circuit, SHOTS)
        samples.append(time.perf_counter() - began)
    cores = (machine_busy_seconds() - busy) / max(time.monotonic() - started, 1e-9)
    return samples, cores


def phase1(
    root: Path, children: Children, plan: Plan, workers: Workers | None
) -> tuple[list[Throughput], Throughput, dict[str, Throughput]]:
    print(
        "[1] durable SubmitJob throughput, 64 calls in flight (broker: SQLite WAL, "
        "synchronous=FULL, no driver, jobs stay QUEUED)",
        flush=True,
    )
    with LocalFacility(root, limits=UNLIMITED_ADMISSION) as facility:
        echo_procs = {mode: start_echo(children, mode, root) for mode in ("aio", "sync")}
        broker = fresh_broker(facility)
        echoes = [echo_target(f"echo-{mode}", proc) for mode, proc in echo_procs.items()]
        submit_rtt = sequential(children, broker, root, plan)
        runs = throughput_runs(children, echoes, facility, plan, workers)
        echo_rtt = {t.name: sequential(children, t, root, plan) for t in echoes}
        for proc in echo_procs.values():
            children.stop(proc)
    return runs, submit_rtt, echo_rtt


def phase2(root: Path, plan: Plan, *, store: str | None = None, workers: int = 1) -> Latency:
    where = f"PostgreSQL, {workers} worker(s)" if store else "SQLite"
    print(
        f"[2] submit-to-result latency: fresh broker and database ({where}), one sim-open "
        "driver (aer)",
        flush=True,
    )
    for name in DB_FILES:
        (root / name).unlink(missing_ok=True)
    limits = {**UNLIMITED_ADMISSION, "server": {"workers": workers}}
    with LocalFacility(root, store=store, limits=limits) as facility:
        facility.start_broker_process()
        facility.start_driver(DEVICE)
        client = facility.client("alice")
        facility.wait_available(client, DEVICE, timeout=STARTUP_TIMEOUT_S)
        latency = submit_to_result(client, plan)
        stop_broker(facility)  # before its schema is dropped
        return latency


def run_bench(root: Path, children: Children, plan: Plan, workers: Workers | None) -> Report:
    runs, submit_rtt, echo_rtt = phase1(root, children, plan, workers)
    latency = phase2(root, plan)
    latencies = {"broker": latency}
    if workers is not None:
        most = max(workers.counts)
        with fresh_schema(workers.dsn) as store:
            latencies[f"pg-w{most}"] = phase2(root, plan, store=store, workers=most)
    print("[3] direct Aer run of the same circuit in this process", flush=True)
    aer, aer_cores = direct_aer(plan)
    return Report(
        runs=runs,
        submit_rtt=submit_rtt,
        echo_rtt=echo_rtt,
        latency=latency,
        latencies=latencies,
        aer=aer,
        aer_machine_cores=aer_cores,
    )


def code_under_test() -> str:
    """Where the broker package is imported from, and its git revision when it has one."""
    import broker

    assert broker.__file__ is not None
    where = Path(broker.__file__).resolve().parents[1]
    try:
        rev = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev = "no git revision"
    return f"{where} ({rev})"


def print_header(plan: Plan, quick: bool) -> None:
    print(
        f"qtestbed broker bench ({'quick smoke run: numbers mean nothing' if quick else 'full'})\n"
        f"  code: {code_under_test()}\n"
        f"  {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"grpcio {grpc.__version__}, load average {os.getloadavg()[0]:.2f} at start\n"
        f"  per throughput run: {plan.channels_per_process} connections per generator process, "
        f"warm-up {plan.warmup_requests} requests / {plan.warmup_seconds} s, "
        f"then at most {plan.measure_requests} requests / {plan.measure_seconds} s",
        flush=True,
    )


def _dump_logs(folder: Path) -> None:
    for log in sorted(folder.rglob("*.log")):
        tail = log.read_text(errors="replace").splitlines()[-15:]
        if tail:
            print(f"--- {log.name} (last lines)", *tail, sep="\n", file=sys.stderr)


def _interrupt(signum: int, frame: object) -> None:
    """First Ctrl-C or SIGTERM: unwind (which stops every process); later ones: ignored,
    so they cannot cut that cleanup short."""
    for other in (signal.SIGTERM, signal.SIGINT):
        signal.signal(other, signal.SIG_IGN)
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--quick", action="store_true", help="a few seconds per phase: a smoke test, not a bench"
    )
    parser.add_argument("--keep", type=Path, help="build the facility and logs here and keep them")
    parser.add_argument(
        "--store",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="postgresql: also measure the broker as worker processes on the database "
        "QTESTBED_TEST_PG_DSN names (a fresh schema per run, dropped after)",
    )
    parser.add_argument(
        "--workers",
        default="1,2",
        help="with --store postgresql: the worker counts to measure, comma-separated",
    )
    parser.add_argument(
        "--channels",
        type=int,
        help="connections per load generator process, for every target alike (default 4; "
        "2 with --quick): worker processes share a port by connection, so few connections "
        "can land on one worker",
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.channels is not None:
        if args.channels < 1:
            parser.error("--channels must be at least 1")
        plan = dataclasses.replace(plan, channels_per_process=args.channels)
    workers = _workers(args.store, args.workers, parser)
    # Every process started from here on (broker, driver, load generators, echo servers)
    # imports the same tree as this script, whatever the venv's editable install points at.
    inherited = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), *([inherited] if inherited else [])])
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _interrupt)
    print_header(plan, args.quick)
    with _workspace(args.keep) as folder:
        children = Children(folder)
        try:
            report = run_bench(folder / "facility", children, plan, workers)
        except KeyboardInterrupt:
            print("interrupted: every process this bench started has been stopped", file=sys.stderr)
            return 130
        except Exception:
            children.close()
            _dump_logs(folder)
            raise
        finally:
            children.close()
    print("\n== summary ==")
    report_throughput(report.runs)
    report_latency(report)
    return 0


def _workers(store: str, counts: str, parser: argparse.ArgumentParser) -> Workers | None:
    if store != "postgresql":
        return None
    dsn = os.environ.get("QTESTBED_TEST_PG_DSN", "")
    if not dsn:
        parser.error("--store postgresql needs QTESTBED_TEST_PG_DSN=postgresql://USER@HOST/DB")
    try:
        numbers = tuple(int(n) for n in counts.split(","))
    except ValueError:
        parser.error(f"--workers takes counts like 1,2, not {counts!r}")
    if not numbers or min(numbers) < 1:
        parser.error("--workers counts must be at least 1")
    return Workers(dsn=dsn, counts=numbers)


@contextlib.contextmanager
def _workspace(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=False)
        yield keep.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="qtestbed-bench-") as tmp:
        yield Path(tmp)


if __name__ == "__main__":
    sys.exit(main())
