"""Another principal's submit latency while a hostile principal runs parser-heavy load.

    .venv/bin/python bench/bench_decode_fairness.py            # about 1.5 minutes
    .venv/bin/python bench/bench_decode_fairness.py --quick    # a smoke run; numbers mean nothing

A broker process (`qtestbed broker`, the `qtestbed init` facility as shipped: SQLite, the decoder
pool sized to the machine, each principal's share half of it; no driver, so jobs stay queued).
bob submits sequentially, alternating a GHZ-3 QPY and a GHZ-3 OpenQASM 2 circuit, one call
every 20 ms at most, each timed from the bench process:
  quiet   bob alone, for 20 s;
  loaded  for 40 s, while alice, in her own process, keeps 8 concurrent 200 KiB OpenQASM 3
          submissions going (seconds of parsing each): each resubmits at once after an answer,
          or after the retry delay the broker gave with a refusal
          (`QtestbedError.retry_after_seconds`; hammering the front door faster is the
          submission rate limiter's business).
Printed: both p50s, what alice's calls got, and `RATIO loaded/quiet`; target <= 2.0.

Every loop stops at a call count or a time limit, whichever first; alice's process is stopped
at the end (and stops itself at its own time limit).
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from qtestbed.cli.demo import ghz_qasm2, ghz_qpy
from qtestbed.client import Client, Profile, QtestbedError
from qtestbed.testing import LocalFacility

ALICE_CALLS = 8
# About 200 KiB of valid OpenQASM 3 (four qubits, depth 6400): seconds of parsing a call.
HEAVY = (
    b'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[4] q;\nbit[4] c;\n'
    + b"h q[0];\nh q[1];\nh q[2];\nh q[3];\n" * (200 * 1024 // 32)
    + b"c = measure q;\n"
)
TARGET = 2.0
PACE_S = 0.02


def heavy_qpy() -> bytes:
    """A large valid QPY circuit (four qubits, 4800 one-qubit gates, about the size of HEAVY):
    the QPY parser's share of a parser-heavy load."""
    from qiskit import QuantumCircuit, qpy

    circuit = QuantumCircuit(4, 4, name="heavy")
    for _ in range(1200):
        for qubit in range(4):
            circuit.h(qubit)
    circuit.measure(range(4), range(4))
    buffer = io.BytesIO()
    qpy.dump(circuit, buffer)
    return buffer.getvalue()  # bob starts a call every 20 ms at most


def bob_p50(
    client: Client, count: int, limit_s: float, *, every_s: float = 0.0
) -> tuple[float, int, dict[str, float]]:
    """Sequential submits alternating QPY and OpenQASM 2, one started every `every_s` at most:
    overall p50 (s), calls, p50 per format."""
    payloads = [("qpy", ghz_qpy(3)), ("qasm2", ghz_qasm2(3))]
    times: dict[str, list[float]] = {"qpy": [], "qasm2": []}
    deadline = time.perf_counter() + limit_s
    n = 0
    while n < count and time.perf_counter() < deadline:
        fmt, payload = payloads[n % 2]
        began = time.perf_counter()
        client.submit(payload, device_id="sim-open", shots=10, fmt=fmt)
        took = time.perf_counter() - began
        times[fmt].append(took)
        n += 1
        time.sleep(max(every_s - took, 0.0))
    every = times["qpy"] + times["qasm2"]
    return statistics.median(every), n, {f: statistics.median(t) for f, t in times.items() if t}


def alice_load(profile: Path, broker: str, limit_s: float, *, with_qpy: bool = False) -> int:
    """alice's side (its own process): 8 heavy submissions in flight until the time limit or
    stdin closes (all OpenQASM 3, or with `with_qpy` every other one a large QPY circuit);
    prints "ready" after her first answer, then her outcomes as JSON."""
    import dataclasses

    heavy = [("qasm3", HEAVY), ("qpy", heavy_qpy())] if with_qpy else [("qasm3", HEAVY)]
    client = Client(dataclasses.replace(Profile.load(profile), broker=broker))
    outcomes: Counter[str] = Counter()
    spent: dict[str, float] = {}
    lock = threading.Lock()
    stop = threading.Event()
    answered = threading.Event()
    deadline = time.monotonic() + limit_s

    def worker(first: int) -> None:
        n = first
        while not stop.is_set() and time.monotonic() < deadline:
            fmt, payload = heavy[n % len(heavy)]
            n += 1
            began = time.perf_counter()
            pause = 0.0
            try:
                client.submit(payload, device_id="sim-open", shots=10, fmt=fmt)
                outcome = "accepted"
            except QtestbedError as exc:
                outcome = exc.code
                pause = exc.retry_after_seconds or 0.0
            with lock:
                outcomes[outcome] += 1
                spent[outcome] = spent.get(outcome, 0.0) + time.perf_counter() - began
            answered.set()
            stop.wait(pause)

    def stdin_closed() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=stdin_closed, daemon=True).start()
    with ThreadPoolExecutor(max_workers=ALICE_CALLS) as pool:
        for n in range(ALICE_CALLS):
            pool.submit(worker, n)
        if answered.wait(limit_s):
            print("ready", flush=True)
    mean_ms = {k: round(spent[k] / n * 1e3, 1) for k, n in outcomes.items()}
    print(json.dumps({"calls": dict(outcomes), "mean_ms": mean_ms}), flush=True)
    client.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (smoke test)")
    parser.add_argument("--alice", nargs=3, metavar=("PROFILE", "BROKER", "SECONDS"))
    parser.add_argument("--with-qpy", action="store_true", help="alice: half her load QPY")
    args = parser.parse_args(argv)
    if args.alice:
        profile, broker, seconds = args.alice
        return alice_load(Path(profile), broker, float(seconds), with_qpy=args.with_qpy)
    # Each phase runs for its time (bob paced at one call per PACE_S) unless the count is hit:
    # the loaded phase then spans several of alice's parses and child replacements.
    count, quiet_s, loaded_s = (50, 2.0, 4.0) if args.quick else (5000, 20.0, 40.0)
    limit_s = loaded_s
    with (
        tempfile.TemporaryDirectory(prefix="qtestbed-bench-decode-") as tmp,
        LocalFacility(Path(tmp) / "facility") as facility,
    ):
        addresses = facility.start_broker_process()
        bob = facility.client("bob")
        for _ in range(10):  # warm the channel, both decoders' paths and the store
            bob_p50(bob, 2, limit_s)
        quiet, quiet_n, quiet_by = bob_p50(bob, count, quiet_s, every_s=PACE_S)
        alice = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--alice",
                str(facility.root / "users" / "alice.toml"),
                addresses.grpc,
                str(limit_s + 60.0),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert alice.stdout is not None
            assert alice.stdin is not None
            if alice.stdout.readline().strip() != "ready":
                print("ERRORS: alice's load did not start")
                return 1
            loaded, loaded_n, loaded_by = bob_p50(bob, count, loaded_s, every_s=PACE_S)
            alice.stdin.close()
            got = json.loads(alice.stdout.readline() or "{}")
            alice.wait(timeout=120)
        finally:
            if alice.poll() is None:
                alice.kill()
                alice.wait()
    print(_line("QUIET ", quiet, quiet_n, quiet_by))
    print(_line("LOADED", loaded, loaded_n, loaded_by))
    calls, mean_ms = got.get("calls", {}), got.get("mean_ms", {})
    print(
        "ALICE  " + ", ".join(f"{k} {n} (mean {mean_ms[k]} ms)" for k, n in sorted(calls.items()))
    )
    ratio = loaded / quiet
    verdict = "PASS" if ratio <= TARGET else "MISS"
    print(f"RATIO loaded/quiet bob submit p50 = {ratio:.2f}  (target <= {TARGET:g}: {verdict})")
    return 0


def _line(name: str, p50: float, n: int, by: dict[str, float]) -> str:
    formats = ", ".join(f"{fmt} {t * 1e3:.2f} ms" for fmt, t in sorted(by.items()))
    return f"{name} bob {n} sequential SubmitJob: p50 {p50 * 1e3:.2f} ms ({formats})"


if __name__ == "__main__":
    sys.exit(main())
