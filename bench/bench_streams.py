"""What a hostile principal's open WatchJob streams cost everyone else.

A broker process (SQLite, no driver, so every job stays QUEUED) with the per-principal stream
cap raised for the bench. Bob submits sequentially to sim-open and his SubmitJob p50 is timed:
quiet, then while a separate process holds alice's open WatchJob streams on her own queued jobs
on the same device, then quiet again. Each of bob's jobs lands ahead of alice's backlog (fair
share between projects), so every submit moves the queue position of every watched job: the
streams really are on jobs that change. Printed: RATIO loaded/quiet p50 (target <= 2.0),
against the lower of the two quiet p50s.

    .venv/bin/python bench/bench_streams.py            # 1,500 streams, about 2 minutes
    .venv/bin/python bench/bench_streams.py --quick    # a smoke run; its numbers mean nothing
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc

from bench.harness import Children, read_line
from qtestbed.cli.demo import ghz_qasm2
from qtestbed.client import Client, Profile, submit_request
from qtestbed.testing import LocalFacility
from qtestbed.v1 import jobs_pb2, jobs_pb2_grpc

TARGET = 2.0
DEVICE = "sim-open"
BATCH = 100  # the broker's SubmitJobs limit


@dataclass(frozen=True, kw_only=True, slots=True)
class Plan:
    streams: int
    submits: int  # bob's timed submits per phase
    warmup: int
    limit_s: float  # per phase, whichever comes first


FULL = Plan(streams=1500, submits=300, warmup=30, limit_s=60.0)
QUICK = Plan(streams=60, submits=20, warmup=5, limit_s=20.0)


def bob_p50(bob: Client, plan: Plan) -> tuple[float, int]:
    """Bob's SubmitJob p50 (ms) over at most `plan.submits` calls / `plan.limit_s` seconds."""
    payload = ghz_qasm2(2)
    for _ in range(plan.warmup):
        bob.submit(payload, device_id=DEVICE, shots=10)
    took: list[float] = []
    deadline = time.monotonic() + plan.limit_s
    while len(took) < plan.submits and time.monotonic() < deadline:
        start = time.perf_counter()
        bob.submit(payload, device_id=DEVICE, shots=10)
        took.append((time.perf_counter() - start) * 1000)
    return statistics.median(took), len(took)


def queue_alice(alice: Client, count: int) -> list[str]:
    ids: list[str] = []
    payload = ghz_qasm2(2)
    while len(ids) < count:
        batch = [
            submit_request(payload, device_id=DEVICE, shots=10)
            for _ in range(min(BATCH, count - len(ids)))
        ]
        ids += [r.job.job_id for r in alice.submit_many(batch)]
    return ids


# --- the hostile side, in its own process ---------------------------------------------------


async def hold_streams(profile: Profile, ids: list[str]) -> None:
    """Open one WatchJob stream per job, say "ready" once every one answered, read every update
    until stdin closes, then say how many updates arrived."""
    from attestation.keys import load_private_key

    creds = grpc.ssl_channel_credentials(
        root_certificates=profile.ca_cert.read_bytes(),
        private_key=load_private_key(profile.key).to_pem(),
        certificate_chain=profile.cert.read_bytes(),
    )
    # Distinct channel arguments: each channel its own connection, ~100 streams on each.
    channels = [
        grpc.aio.secure_channel(profile.broker, creds, options=[("qtestbed.bench.channel", n)])
        for n in range(max(1, len(ids) // 100))
    ]
    opened = asyncio.Semaphore(0)
    updates = 0

    # At most this many streams opening at once: a burst of thousands of new calls overflows
    # gRPC's own queue of calls waiting for the server to take them (they come back CANCELLED).
    opening = asyncio.Semaphore(100)

    async def watch(job_id: str, channel: grpc.aio.Channel) -> None:
        nonlocal updates
        stub = jobs_pb2_grpc.JobServiceStub(channel)
        await opening.acquire()
        call = stub.WatchJob(jobs_pb2.WatchJobRequest(job_id=job_id))
        first = True
        async for _ in call:
            if first:
                opening.release()
                opened.release()
                first = False
            else:
                updates += 1

    tasks = [
        asyncio.ensure_future(watch(job_id, channels[n % len(channels)]))
        for n, job_id in enumerate(ids)
    ]
    for n in range(1, len(ids) + 1):
        try:
            await asyncio.wait_for(opened.acquire(), 30)
        except TimeoutError:
            broken = {
                " ".join(str(t.exception()).split())[:300]
                for t in tasks
                if t.done() and not t.cancelled() and t.exception()
            }
            print(f"only {n - 1} streams answered; failures: {sorted(broken)[:3]}", flush=True)
            raise
        if n % 100 == 0:
            print(f"{n} streams answered", file=sys.stderr, flush=True)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for task in tasks:
        task.cancel()
    failed = [t for t in tasks if t.done() and not t.cancelled() and t.exception()]
    print(f"updates {updates} failed {len(failed)}", flush=True)
    for channel in channels:
        await channel.close()


def holder_main(profile_path: str, broker: str, ids_path: str) -> int:
    profile = replace(Profile.load(Path(profile_path)), broker=broker)
    ids = Path(ids_path).read_text().split()
    asyncio.run(hold_streams(profile, ids))
    return 0


# --- the run ------------------------------------------------------------------------------------


def prepare(facility: LocalFacility, plan: Plan) -> None:
    path = facility.root / "broker.toml"
    calls = (
        f"[calls]\nstreams_per_principal = {plan.streams + 10}\n"
        f"max_concurrent_rpcs = {plan.streams + 1000}\n"
    )
    head, timing, tail = path.read_text().partition("[timing]")
    path.write_text(f"{head}{calls}{timing}{tail}" if timing else f"{head}\n{calls}")


def run(root: Path, plan: Plan) -> int:
    with LocalFacility(root) as facility:
        prepare(facility, plan)
        addresses = facility.start_broker_process()
        alice, bob = facility.client("alice"), facility.client("bob")
        ids = queue_alice(alice, plan.streams)
        (root / "ids.txt").write_text("\n".join(ids))
        quiet, n_quiet = bob_p50(bob, plan)
        print(f"  quiet:   bob SubmitJob p50 {quiet:.2f} ms over {n_quiet} calls", flush=True)
        children = Children(root)
        try:
            holder = children.start(
                "holder",
                [
                    __file__,
                    "--hold",
                    str(root / "users" / "alice.toml"),
                    addresses.grpc,
                    str(root / "ids.txt"),
                ],
            )
            line = read_line(holder, 300)
            if line != "ready":
                print(f"ERROR: the stream holder did not get ready: {line}")
                return 1
            loaded, n_loaded = bob_p50(bob, plan)
            print(
                f"  loaded:  bob SubmitJob p50 {loaded:.2f} ms over {n_loaded} calls, alice "
                f"holding {plan.streams} WatchJob streams",
                flush=True,
            )
            assert holder.stdin is not None
            holder.stdin.close()
            held = read_line(holder, 60)
            print(f"  holder:  {held} (updates alice's streams received while bob submitted)")
        finally:
            children.close()
        after, n_after = bob_p50(bob, plan)
        print(f"  after:   bob SubmitJob p50 {after:.2f} ms over {n_after} calls", flush=True)
    _, updates, _, failed = held.split()
    if int(updates) == 0 or int(failed):
        print(f"ERROR: the held streams must see changes and none may fail ({held})")
        return 1
    # Against the quieter of the two baselines: the machine's noise never flatters the ratio.
    ratio = loaded / min(quiet, after)
    verdict = "PASS" if ratio <= TARGET else "MISS"
    print(
        f"RATIO loaded/quiet bob SubmitJob p50: {ratio:.2f} (target <= {TARGET}) {verdict} "
        f"(quiet = the lower of before {quiet:.2f} ms and after {after:.2f} ms)"
    )
    return 0


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
    parser.add_argument("--quick", action="store_true", help="a few streams: a smoke test")
    parser.add_argument(
        "--hold", nargs=3, metavar=("PROFILE", "BROKER", "IDS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.hold:
        return holder_main(*args.hold)
    plan = QUICK if args.quick else FULL
    kind = "quick smoke run: numbers mean nothing" if args.quick else "full"
    print(
        f"qtestbed streams bench ({kind})\n"
        f"  code: {code_under_test()}\n"
        f"  {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"grpcio {grpc.__version__}, load average {os.getloadavg()[0]:.2f} at start\n"
        f"  {plan.streams} streams; per phase {plan.warmup} warm-up submits, then at most "
        f"{plan.submits} submits / {plan.limit_s:.0f} s",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="qtestbed-bench-streams-") as tmp:
        return run(Path(tmp) / "facility", plan)


if __name__ == "__main__":
    sys.exit(main())
