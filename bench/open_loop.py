"""The open-loop load generator bench_goodput.py starts: SubmitJob at a set rate, whatever the
broker answers.

Open loop: call i of a step is sent at start + i / rate, not when call i - 1 answered, so a slow
broker is offered the same load as a fast one (a closed loop would slow down with it and hide a
collapse). Each call goes to one of several principals' channels (each its own TCP
connection) and that principal's device, as GHZ-2 OpenQASM 2, 10 shots, a new idempotency key a
call. The lane is drawn at random (seeded, so a run repeats), not taken in turn: against a
facility bucket that admits every other call, strict round-robin over four lanes aliases, and
the admitted calls all fall on the same two lanes for tens of seconds at a time. The admitted
mix then swings between devices of different speed (noisy Aer runs at about half the ideal's
rate), and goodput with it, which measures the generator, not the broker. Drawn lanes keep the
admitted mix the offered mix; the step reports it (`admitted_by_device`).

Protocol: after connecting it prints `{"event": "ready"}`; then each line `RATE SECONDS` on stdin
runs one step, and once every call sent in it has answered (or hit its deadline) it prints
`{"event": "step", ...}`: offered, admitted and refused counts (RESOURCE_EXHAUSTED split by
whether the refusal carried a retry delay), other errors, and admitted calls' p50/p99. A step
that would hold more than `max_in_flight` calls at once counts the rest as `not_sent` (the
generator's own bound: its memory stays bounded however slow the broker gets). stdin closing
ends it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import json
import random
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc

from bench.harness import percentile
from qtestbed.cli.demo import ghz_qasm2
from qtestbed.client import Profile, error_from
from qtestbed.v1 import jobs_pb2, jobs_pb2_grpc

CALL_TIMEOUT_S = 30.0
PAYLOAD = ghz_qasm2(2)


@dataclass(slots=True)
class Step:
    rate: float
    seconds: float
    offered: int = 0
    not_sent: int = 0
    latencies: list[float] = field(default_factory=list)
    refused_with_retry: int = 0
    retry_delays: list[float] = field(default_factory=list)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    by_device: collections.Counter[str] = field(default_factory=collections.Counter)

    def summary(self, started: float, ended: float) -> dict[str, Any]:
        return {
            "event": "step",
            "rate": self.rate,
            "started": started,
            "ended": ended,
            "offered": self.offered,
            "not_sent": self.not_sent,
            "admitted": len(self.latencies),
            "admitted_by_device": dict(self.by_device),
            "refused_with_retry": self.refused_with_retry,
            "retry_delay_p50_s": percentile(self.retry_delays, 0.5),
            "errors": dict(self.errors),
            "p50_ms": percentile(self.latencies, 0.50) * 1e3,
            "p99_ms": percentile(self.latencies, 0.99) * 1e3,
        }


async def one_call(stub: jobs_pb2_grpc.JobServiceStub, device: str, step: Step) -> None:
    request = jobs_pb2.SubmitJobRequest(
        device_id=device,
        circuit=jobs_pb2.Circuit(format=jobs_pb2.CIRCUIT_FORMAT_OPENQASM2, payload=PAYLOAD),
        shots=10,
        idempotency_key=uuid.uuid4().hex,
    )
    began = time.perf_counter()
    try:
        await stub.SubmitJob(request, timeout=CALL_TIMEOUT_S)
    except grpc.aio.AioRpcError as exc:
        error = error_from(exc)
        if error.code == "RESOURCE_EXHAUSTED" and error.retry_after_seconds:
            step.refused_with_retry += 1
            step.retry_delays.append(error.retry_after_seconds)
        else:
            step.errors[error.code] += 1
        return
    step.latencies.append(time.perf_counter() - began)
    step.by_device[device] += 1


async def run_step(
    lanes: list[tuple[jobs_pb2_grpc.JobServiceStub, str]],
    step: Step,
    max_in_flight: int,
    rng: random.Random,
) -> dict[str, Any]:
    """Send at `step.rate` for `step.seconds`, then wait for every call of the step."""
    in_flight: set[asyncio.Task[None]] = set()
    started = time.monotonic()
    total = int(step.rate * step.seconds)
    for i in range(total):
        delay = started + i / step.rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        step.offered += 1
        if len(in_flight) >= max_in_flight:
            step.not_sent += 1
            continue
        stub, device = rng.choice(lanes)
        task = asyncio.ensure_future(one_call(stub, device, step))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    sent_until = time.monotonic()
    if in_flight:
        await asyncio.wait(set(in_flight), timeout=CALL_TIMEOUT_S + 5)
    return step.summary(started, sent_until)


def channel_for(profile: Profile) -> grpc.aio.Channel:
    from attestation.keys import load_private_key

    creds = grpc.ssl_channel_credentials(
        root_certificates=profile.ca_cert.read_bytes(),
        private_key=load_private_key(profile.key).to_pem(),
        certificate_chain=profile.cert.read_bytes(),
    )
    return grpc.aio.secure_channel(
        profile.broker, creds, options=[("grpc.use_local_subchannel_pool", 1)]
    )


async def run(config: dict[str, Any]) -> int:
    channels: list[grpc.aio.Channel] = []
    lanes: list[tuple[jobs_pb2_grpc.JobServiceStub, str]] = []
    for profile_path, device in config["lanes"]:
        profile = dataclasses.replace(Profile.load(Path(profile_path)), broker=config["broker"])
        channel = channel_for(profile)
        await asyncio.wait_for(channel.channel_ready(), 30)
        channels.append(channel)
        lanes.append((jobs_pb2_grpc.JobServiceStub(channel), device))
    rng = random.Random(int(config.get("seed", 0)))
    print(json.dumps({"event": "ready"}), flush=True)
    try:
        while line := await asyncio.to_thread(sys.stdin.readline):
            rate, seconds = (float(v) for v in line.split())
            result = await run_step(lanes, Step(rate, seconds), int(config["max_in_flight"]), rng)
            print(json.dumps(result), flush=True)
    finally:
        for channel in channels:
            await channel.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--config", required=True, help='{"broker", "lanes", "max_in_flight"}')
    args = parser.parse_args(argv)
    return asyncio.run(run(json.loads(args.config)))


if __name__ == "__main__":
    sys.exit(main())
