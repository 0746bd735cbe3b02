"""The load generator bench_broker.py starts: one process, grpc.aio, N calls in flight.

Every call sends a freshly serialized SubmitJobRequest (GHZ-5, OpenQASM 2, 1,000 shots, a new
idempotency key) with identity (de)serializers, so an echo server and the broker see exactly the
same bytes and the generator does exactly the same work for both. Each channel gets its own
subchannel pool, hence its own TCP connection.

Protocol on stdout, one JSON object a line: after connecting and warming up it prints
`{"event": "ready", ...}` and waits for `go` on stdin (the parent starts every generator at
once), then runs the measured phase and prints `{"event": "result", ...}`. Both phases stop at
whichever comes first, a request count or a time limit.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import resource
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc

from attestation.keys import load_private_key
from qtestbed.cli.demo import ghz_qasm2
from qtestbed.v1 import jobs_pb2

CALL_TIMEOUT_S = 30.0
GO_TIMEOUT_S = 600.0
CONNECT_TIMEOUT_S = 30.0
GHZ5 = ghz_qasm2(5)


@dataclass(frozen=True, kw_only=True, slots=True)
class LoadConfig:
    """What to call, how hard, and for how long (each phase: count and time bounds)."""

    target: str
    method: str
    ca: str
    cert: str
    key: str
    concurrency: int
    channels: int
    warmup_requests: int
    warmup_seconds: float
    max_requests: int
    max_seconds: float


@dataclass(frozen=True, kw_only=True, slots=True)
class PhaseResult:
    requests: int
    errors: dict[str, int]
    started: float
    ended: float
    p50_ms: float
    p99_ms: float
    cpu_seconds: float


def submit_request_bytes() -> bytes:
    """One SubmitJobRequest as a client sends it, with a new idempotency key."""
    request = jobs_pb2.SubmitJobRequest(
        device_id="sim-open",
        circuit=jobs_pb2.Circuit(format=jobs_pb2.CIRCUIT_FORMAT_OPENQASM2, payload=GHZ5),
        shots=1000,
        idempotency_key=uuid.uuid4().hex,
    )
    return request.SerializeToString()


def percentile(samples: list[float], fraction: float) -> float:
    """Nearest-rank percentile of `samples` (0 when empty)."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run_phase(
    calls: list[grpc.aio.UnaryUnaryMultiCallable], concurrency: int, limit: int, seconds: float
) -> PhaseResult:
    """Keep `concurrency` calls in flight until `limit` calls were issued or `seconds` passed."""
    issued = 0
    latencies: list[float] = []
    errors: collections.Counter[str] = collections.Counter()
    deadline = time.monotonic() + seconds

    async def lane(index: int) -> None:
        nonlocal issued
        call = calls[index % len(calls)]
        while issued < limit and time.monotonic() < deadline:
            issued += 1
            request = submit_request_bytes()
            began = time.perf_counter()
            try:
                await call(request, timeout=CALL_TIMEOUT_S)
            except grpc.aio.AioRpcError as exc:
                errors[exc.code().name] += 1
                continue
            latencies.append(time.perf_counter() - began)

    cpu = _cpu_seconds()
    started = time.monotonic()
    await asyncio.gather(*(lane(i) for i in range(concurrency)))
    ended = time.monotonic()
    return PhaseResult(
        requests=len(latencies),
        errors=dict(errors),
        started=started,
        ended=ended,
        p50_ms=percentile(latencies, 0.50) * 1e3,
        p99_ms=percentile(latencies, 0.99) * 1e3,
        cpu_seconds=_cpu_seconds() - cpu,
    )


def _emit(event: str, body: dict[str, Any]) -> None:
    print(json.dumps({"event": event, **body}), flush=True)


def credentials(config: LoadConfig) -> grpc.ChannelCredentials:
    """The client side of the facility's mutual TLS, as qtestbed.client.Client builds it."""
    return grpc.ssl_channel_credentials(
        root_certificates=Path(config.ca).read_bytes(),
        private_key=load_private_key(Path(config.key)).to_pem(),
        certificate_chain=Path(config.cert).read_bytes(),
    )


async def run(config: LoadConfig, creds: grpc.ChannelCredentials) -> int:
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [
        grpc.aio.secure_channel(config.target, creds, options=options)
        for _ in range(config.channels)
    ]
    try:
        for channel in channels:
            await asyncio.wait_for(channel.channel_ready(), CONNECT_TIMEOUT_S)
        calls = [channel.unary_unary(config.method) for channel in channels]
        warm = await run_phase(
            calls, config.concurrency, config.warmup_requests, config.warmup_seconds
        )
        _emit("ready", {"warmup": asdict(warm)})
        line = await asyncio.wait_for(asyncio.to_thread(sys.stdin.readline), GO_TIMEOUT_S)
        if line.strip() != "go":
            return 1
        result = await run_phase(calls, config.concurrency, config.max_requests, config.max_seconds)
        _emit("result", asdict(result))
        return 0
    finally:
        for channel in channels:
            await channel.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--config", required=True, help="a LoadConfig as a JSON object")
    args = parser.parse_args(argv)
    config = LoadConfig(**json.loads(args.config))
    return asyncio.run(run(config, credentials(config)))


if __name__ == "__main__":
    sys.exit(main())
