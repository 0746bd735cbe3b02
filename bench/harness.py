"""Process plumbing for bench/: children that always get stopped, CPU accounting, load runs.

A load run starts bench/loadgen.py processes against one server, lets each warm up, starts them
together, and adds up what they saw and what CPU each side burned (from /proc).
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True, kw_only=True, slots=True)
class Throughput:
    """One load run against one server: what the generators saw and what each side burned.

    Latency percentiles are the worst of the generators' own; CPU figures are cores (CPU
    seconds per second of the run).
    """

    target: str
    processes: int
    requests: int
    errors: dict[str, int]
    seconds: float
    warmup_requests: int
    p50_ms: float
    p99_ms: float
    server_cpu: float
    loadgen_cpu: float
    other_cpu: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True, kw_only=True, slots=True)
class Target:
    name: str
    address: str
    method: str
    pid: int


class Children:
    """Every process this bench starts itself; `close` stops them all (TERM, then KILL)."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self._procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, args: Sequence[str]) -> subprocess.Popen[bytes]:
        with open(self.logs / f"{name}.log", "ab") as log:
            # Unbuffered: read_line selects on the pipe itself, so no line may sit in a buffer.
            proc = subprocess.Popen(
                [sys.executable, *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                bufsize=0,
            )
        self._procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        if proc in self._procs:
            self._procs.remove(proc)

    def close(self) -> None:
        for proc in list(self._procs):
            self.stop(proc)


def read_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    """The next line `proc` prints, waiting at most `timeout`; RuntimeError if none comes."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if selector.select(min(0.5, max(0.0, deadline - time.monotonic()))):
                line = proc.stdout.readline()
                if not line:
                    break
                return line.decode().strip()
            if proc.poll() is not None:
                break
    raise RuntimeError(f"process {proc.args!r} printed nothing in {timeout:.0f}s (see logs)")


def _stat_fields(pid: str) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None  # gone meanwhile


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of one process (all its threads, not its children)."""
    fields = _stat_fields(str(pid))
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") if fields else 0.0


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU time so far of a process and its live descendants (all threads).

    The broker validates circuits in a child process, so its own /proc entry is not enough.
    """
    stats = {p.name: _stat_fields(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()}
    children: dict[str, list[str]] = {}
    for pid, fields in stats.items():
        if fields is not None:
            children.setdefault(fields[1], []).append(pid)
    ticks, pending, seen = 0, [str(root)], 0
    while pending and seen < 10_000:
        pid = pending.pop()
        seen += 1
        fields = stats.get(pid)
        if fields is not None:
            ticks += int(fields[11]) + int(fields[12])
        pending.extend(children.get(pid, []))
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent on anything but idle and I/O wait, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    busy = sum(values[:8]) - values[3] - values[4]  # user..steal, less idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


def run_load(
    children: Children, target: Target, configs: list[dict[str, Any]], timeout: float
) -> Throughput:
    """Start one generator per config, warm them up, start them together, and add up."""
    procs = [
        children.start(
            f"loadgen-{target.name}-{i}", [str(BENCH_DIR / "loadgen.py"), "--config", json.dumps(c)]
        )
        for i, c in enumerate(configs)
    ]
    try:
        warm = [_expect(proc, "ready", timeout)["warmup"] for proc in procs]
        server_before, machine_before = tree_cpu_seconds(target.pid), machine_busy_seconds()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            proc.stdin.flush()
        results = [_expect(proc, "result", timeout) for proc in procs]
        server_cpu = tree_cpu_seconds(target.pid) - server_before
        machine_cpu = machine_busy_seconds() - machine_before
    finally:
        for proc in procs:
            children.stop(proc)
    seconds = max(r["ended"] for r in results) - min(r["started"] for r in results)
    errors: dict[str, int] = {}
    for r in results:
        for code, count in r["errors"].items():
            errors[code] = errors.get(code, 0) + count
    loadgen_cpu = sum(r["cpu_seconds"] for r in results)
    per_second = 1 / seconds if seconds > 0 else 0.0
    return Throughput(
        target=target.name,
        processes=len(procs),
        requests=sum(r["requests"] for r in results),
        errors=errors,
        seconds=seconds,
        warmup_requests=sum(w["requests"] for w in warm),
        p50_ms=max(r["p50_ms"] for r in results),
        p99_ms=max(r["p99_ms"] for r in results),
        server_cpu=server_cpu * per_second,
        loadgen_cpu=loadgen_cpu * per_second,
        other_cpu=max(0.0, machine_cpu - server_cpu - loadgen_cpu) * per_second,
    )


def _expect(proc: subprocess.Popen[bytes], event: str, timeout: float) -> dict[str, Any]:
    line = read_line(proc, timeout)
    message: dict[str, Any] = json.loads(line)
    if message.get("event") != event:
        raise RuntimeError(f"load generator sent {message.get('event')!r}, expected {event!r}")
    return message


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (the same rule as bench/loadgen.py); 0 when empty."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def print_run(run: Throughput) -> None:
    errors = f"; ERRORS {run.errors}" if run.errors else ""
    queue = (
        f"; queue 0 -> {run.warmup_requests + run.requests} jobs"
        if not run.target.startswith("echo")
        else ""
    )
    print(
        f"  {run.target:<9} loadgen x{run.processes}: {run.rate:7.1f} req/s, "
        f"{run.requests} in {run.seconds:.1f} s, p50 {run.p50_ms:.1f} ms, p99 {run.p99_ms:.1f} ms"
        f"{queue}{errors}\n"
        f"{'':<12}CPU cores busy: server {run.server_cpu:.2f}, load generator "
        f"{run.loadgen_cpu:.2f}, rest of machine (kernel, other processes) {run.other_cpu:.2f}",
        flush=True,
    )
