"""Flat at scale: the broker with a million queued jobs against the same broker with a thousand.

For each store (SQLite, and PostgreSQL in a fresh schema of the test database, dropped after)
and each queue length: a facility is made, a broker process accepts one template job from bob
through SubmitJob and stops; the store is then filled DIRECTLY (one bulk SQL insert, see
bench/scale_store.py) with that many QUEUED copies on sim-open. Then, measured:

- restart: from starting the broker process to its first successful RPC (alice's
  ListDevices), waited on for at most `restart_limit_s`: the first start after the fill, and,
  once everything else is measured, `restarts` more starts of the same store (their median is
  printed beside the first; the target is judged on the first);
- RSS of the broker process (VmRSS after the restart, and after alice's submits: the higher);
- alice's SubmitJob p50, sequential, to the same device (her jobs queue behind bob's share);
- dispatch rate: jobs completed per second once a real driver (a fast simulated device, Aer)
  has attested and taken its first jobs, counted in the store.

Printed: every absolute figure, and the ratios large/small (RSS, submit p50) and small/large
(dispatch rate: how much slower), each against 1.3; the restart against 2 s.

    .venv/bin/python bench/bench_scale.py                 # 1,000 vs 1,000,000; ~15 min
    .venv/bin/python bench/bench_scale.py --quick         # small numbers; a smoke run only
    .venv/bin/python bench/bench_scale.py --stores sqlite # one store only

PostgreSQL runs need --pg-dsn or QTESTBED_TEST_PG_DSN (postgresql://postgres@127.0.0.1:5432/test).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.scale_store import BenchStore
from broker.app import BrokerAddresses
from qtestbed.cli.demo import ghz_qasm2
from qtestbed.client import Client, Profile, QtestbedError
from qtestbed.testing import UNLIMITED_ADMISSION, LocalFacility

TARGET_RATIO = 1.3
TARGET_RESTART_S = 2.0
DEVICE = "sim-open"


@dataclass(frozen=True, kw_only=True, slots=True)
class Plan:
    small: int
    large: int
    submits: int  # alice's timed submits (after `warmup` untimed ones)
    warmup: int
    submit_limit_s: float
    dispatched: int  # completions counted for the dispatch rate, at most
    dispatch_limit_s: float
    restart_limit_s: float
    restarts: int  # starts after the first, for the median


FULL = Plan(
    small=1_000,
    large=1_000_000,
    submits=200,
    warmup=20,
    submit_limit_s=60.0,
    dispatched=400,
    dispatch_limit_s=40.0,
    restart_limit_s=300.0,
    restarts=3,
)
QUICK = Plan(
    small=100,
    large=2_000,
    submits=15,
    warmup=3,
    submit_limit_s=20.0,
    dispatched=15,
    dispatch_limit_s=30.0,
    restart_limit_s=60.0,
    restarts=2,
)


@dataclass(frozen=True, kw_only=True, slots=True)
class Figures:
    queued: int
    restart_s: float | None  # None: no answer within the limit (nothing else was measured)
    rss_mib: float = 0.0
    hwm_mib: float = 0.0
    submit_p50_ms: float = 0.0
    dispatch_per_s: float = 0.0
    restarts_s: tuple[float, ...] = ()  # the later starts (a start that did not answer: absent)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def memory_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process, in MiB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return tuple(int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM"))  # type: ignore[return-value]


def template_job(facility: LocalFacility) -> str:
    """Start the broker once (it migrates and seeds the store), take bob's one job, stop."""
    facility.start_broker_process()
    job = facility.client("bob").submit(ghz_qasm2(2), device_id=DEVICE, shots=10).job
    facility.stop()
    return str(job.job_id)


def timed_start(facility: LocalFacility, limit_s: float) -> tuple[Client, float] | None:
    """Start the broker process on fixed ports; alice's client and the seconds from process
    start to her first successful RPC, or None after `limit_s` (the process is then stopped)."""
    grpc_port, link_port = free_port(), free_port()
    cmd = [
        sys.executable,
        "-m",
        "qtestbed",
        "broker",
        "--config",
        str(facility.root / "broker.toml"),
    ]
    cmd += ["--listen", f"127.0.0.1:{grpc_port}", "--link-listen", f"tcp://127.0.0.1:{link_port}"]
    cmd += ["--metrics-listen", "127.0.0.1:0", "--store", str(facility.store)]
    profile = replace(
        Profile.load(facility.root / "users" / "alice.toml"), broker=f"127.0.0.1:{grpc_port}"
    )
    with open(facility.root / "broker.log", "ab") as log:
        started = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
    facility.broker_process = proc
    facility.addresses = BrokerAddresses(
        grpc=f"127.0.0.1:{grpc_port}", link=f"tcp://127.0.0.1:{link_port}", metrics=""
    )
    while time.monotonic() - started < limit_s and proc.poll() is None:
        # A fresh client (channel) each try: a channel refused once waits out gRPC's reconnect
        # backoff (1 s, then 1.6 s, ...), which would be measured instead of the broker.
        alice = Client(profile, timeout=2.0)
        try:
            alice.devices()
        except QtestbedError:
            alice.close()
            time.sleep(0.02)
            continue
        took = time.monotonic() - started
        alice.timeout = 30.0
        return alice, took
    facility.stop()
    return None


def submit_p50(alice: Client, plan: Plan) -> float:
    payload = ghz_qasm2(2)
    for _ in range(plan.warmup):
        alice.submit(payload, device_id=DEVICE, shots=10)
    took: list[float] = []
    deadline = time.monotonic() + plan.submit_limit_s
    while len(took) < plan.submits and time.monotonic() < deadline:
        start = time.perf_counter()
        alice.submit(payload, device_id=DEVICE, shots=10)
        took.append((time.perf_counter() - start) * 1000)
    return statistics.median(took)


def dispatch_rate(facility: LocalFacility, alice: Client, store: BenchStore, plan: Plan) -> float:
    """Jobs completed per second by one real driver, from the store's own completion times:
    the first 5 after the driver started are its warm-up, the next `plan.dispatched` are
    timed (a fast driver may drain a small queue before any poll here could see it)."""
    since = time.time()
    facility.start_driver(DEVICE)
    facility.wait_available(alice, DEVICE)
    deadline = time.monotonic() + plan.dispatch_limit_s
    wanted = 5 + plan.dispatched
    times = store.finish_times(since)
    while len(times) < wanted and time.monotonic() < deadline:
        if store.count_state("QUEUED") == 0:
            times = store.finish_times(since)
            break
        time.sleep(0.25)
        times = store.finish_times(since)
    timed = times[5:wanted]
    if len(timed) < 2 or timed[-1] <= timed[0]:
        return 0.0
    return (len(timed) - 1) / (timed[-1] - timed[0])


def restarts(facility: LocalFacility, plan: Plan) -> tuple[float, ...]:
    """Stop the facility and time `plan.restarts` more starts of the broker on its store."""
    took = []
    for _ in range(plan.restarts):
        facility.stop()
        started = timed_start(facility, plan.restart_limit_s)
        if started is not None:
            started[0].close()
            took.append(started[1])
    facility.stop()
    return tuple(took)


def measure(root: Path, store: BenchStore, queued: int, plan: Plan) -> Figures:
    with LocalFacility(root, store=store.url, limits=UNLIMITED_ADMISSION) as facility:
        template = template_job(facility)
        filled = time.monotonic()
        store.fill(template, queued - 1, start_at=time.time() - 3600 - queued * 0.001)
        print(f"    filled {queued - 1:,} rows in {time.monotonic() - filled:.1f} s", flush=True)
        started = timed_start(facility, plan.restart_limit_s)
        if started is None:
            return Figures(queued=queued, restart_s=None)
        alice, restart_s = started
        assert facility.broker_process is not None
        pid = facility.broker_process.pid
        time.sleep(1.0)
        idle_rss, _ = memory_mib(pid)
        p50 = submit_p50(alice, plan)
        rss, hwm = memory_mib(pid)
        rate = dispatch_rate(facility, alice, store, plan)
        alice.close()
        again = restarts(facility, plan)
        return Figures(
            queued=queued,
            restart_s=restart_s,
            rss_mib=max(idle_rss, rss),
            hwm_mib=hwm,
            submit_p50_ms=p50,
            dispatch_per_s=rate,
            restarts_s=again,
        )


def show(kind: str, f: Figures) -> None:
    if f.restart_s is None:
        print(f"  {kind} {f.queued:>9,} queued: no answer within the restart limit")
        return
    later = "/".join(f"{s:.2f}" for s in f.restarts_s)
    median = f", median {statistics.median(f.restarts_s):.2f} s" if f.restarts_s else ""
    print(
        f"  {kind} {f.queued:>9,} queued: restart {f.restart_s:.2f} s (then {later or 'none'}"
        f"{median}), load average then {os.getloadavg()[0]:.2f}, RSS {f.rss_mib:.0f} MiB "
        f"(peak {f.hwm_mib:.0f}), submit p50 {f.submit_p50_ms:.2f} ms, dispatch "
        f"{f.dispatch_per_s:.1f} jobs/s",
        flush=True,
    )


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def compare(kind: str, small: Figures, large: Figures, restart_limit_s: float) -> None:
    label = f"{kind} {large.queued:,}/{small.queued:,}"
    if large.restart_s is None or small.restart_s is None:
        print(
            f"RESTART {kind} {large.queued:,} queued: no answer within {restart_limit_s:.0f} s MISS"
        )
        return
    ratios = (
        ("RSS", large.rss_mib / small.rss_mib),
        ("submit p50", large.submit_p50_ms / small.submit_p50_ms),
        ("dispatch slowdown", small.dispatch_per_s / max(large.dispatch_per_s, 1e-9)),
    )
    for name, ratio in ratios:
        ok = verdict(ratio <= TARGET_RATIO)
        print(f"RATIO {label} {name}: {ratio:.2f} (target <= {TARGET_RATIO}) {ok}")
    fast = large.restart_s < TARGET_RESTART_S
    median = (
        f"; the {len(large.restarts_s)} starts after it: median "
        f"{statistics.median(large.restarts_s):.2f} s"
        if large.restarts_s
        else ""
    )
    print(
        f"RESTART {kind} {large.queued:,} queued: first start after the fill answered in "
        f"{large.restart_s:.2f} s (target < {TARGET_RESTART_S:.0f} s) {verdict(fast)}{median}"
    )


def store_for(kind: str, folder: Path, pg_dsn: str) -> BenchStore:
    """A fresh store of `kind`: a SQLite file in `folder`, or a new PostgreSQL schema."""
    if kind == "sqlite":
        return BenchStore(sqlite_path=folder / "broker.db")
    return BenchStore(pg_dsn=pg_dsn, pg_schema=f"qtestbed_bench_scale_{uuid.uuid4().hex[:12]}")


def run_store(tmp: Path, kind: str, pg_dsn: str, plan: Plan) -> None:
    figures = []
    for queued in (plan.small, plan.large):
        folder = tmp / f"{kind}-{queued}"
        folder.mkdir()
        store = store_for(kind, folder, pg_dsn)
        print(f"  {store.kind}: {queued:,} queued", flush=True)
        try:
            figures.append(measure(folder / "facility", store, queued, plan))
        finally:
            store.drop()
        show(store.kind, figures[-1])
    compare(store.kind, figures[0], figures[1], plan.restart_limit_s)


def code_under_test() -> str:
    tree = Path(__file__).resolve().parents[1]
    described = subprocess.run(
        ["git", "-C", str(tree), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    )
    return f"{tree} ({described.stdout.strip() or 'not a git tree'})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="small numbers: a smoke run")
    parser.add_argument(
        "--stores",
        default="",
        help="sqlite,postgresql (default: both, or SQLite alone without a DSN)",
    )
    parser.add_argument("--pg-dsn", default=os.environ.get("QTESTBED_TEST_PG_DSN", ""))
    parser.add_argument(
        "--keep", type=Path, help="build the facilities (broker and driver logs) here and keep them"
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    default = "sqlite,postgresql" if args.pg_dsn else "sqlite"
    if not args.stores and not args.pg_dsn:
        print("PostgreSQL skipped: set QTESTBED_TEST_PG_DSN or --pg-dsn to measure it too")
    kinds = [k.strip() for k in (args.stores or default).split(",") if k.strip()]
    unknown = set(kinds) - {"sqlite", "postgresql"}
    if unknown or not kinds:
        parser.error(f"--stores takes sqlite and/or postgresql, not {sorted(unknown) or kinds}")
    if "postgresql" in kinds and not args.pg_dsn:
        parser.error("PostgreSQL needs --pg-dsn or QTESTBED_TEST_PG_DSN (or --stores sqlite)")
    kind = "quick smoke run: numbers mean nothing" if args.quick else "full"
    print(
        f"qtestbed scale bench ({kind})\n"
        f"  code: {code_under_test()}\n"
        f"  {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.2f} at start\n"
        f"  {plan.small:,} vs {plan.large:,} queued on {DEVICE}; {plan.warmup} warm-up and at most "
        f"{plan.submits} timed submits; at most {plan.dispatched} completions / "
        f"{plan.dispatch_limit_s:.0f} s for the dispatch rate",
        flush=True,
    )
    with contextlib.ExitStack() as stack:
        if args.keep:
            args.keep.mkdir(parents=True)
            tmp = args.keep
        else:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="qtestbed-scale-")))
        for store_kind in kinds:
            run_store(tmp, store_kind, args.pg_dsn, plan)
    return 0


if __name__ == "__main__":
    sys.exit(main())
