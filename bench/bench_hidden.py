"""Hidden against absent, by timing alone: what an uncleared researcher could learn.

    .venv/bin/python bench/bench_hidden.py            # about a minute
    .venv/bin/python bench/bench_hidden.py --quick    # a smoke run; its numbers mean nothing
    .venv/bin/python bench/bench_hidden.py --rpc SubmitJob --seed N   # one RPC, a given order

A real facility (`qtestbed init`, LocalFacility, the broker embedded in this process on SQLite,
no driver) and alice's mutual-TLS channel. Each RPC that takes an id is called with four ids:
the thing alice must not learn about (the `restricted` device `sim-restricted`, above her
tier; a job or a session of bob's) and three ids that name nothing. Every answer is NOT_FOUND,
and the bench first checks that the four answers are the same but for the id. No driver is
attached, so the hidden device has not attested (tests/unit/core/test_hidden_work.py compares
an attested one step by step).

Each round calls all four in a random order: hidden (or foreign) against absent A is the pair
under test, absent B against absent C the same-vs-same control, so both see the same drift.
Per RPC and comparison: the median paired difference, `RATIO` = the ratio of the two medians,
an exact sign test and a Wilcoxon signed-rank test over the pairs (bench/paired.py). A leak
shows as a test ratio away from the control's and p-values far below the control's.

Every loop stops at a count or a time limit, whichever comes first; all on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc

from bench.paired import Comparison, compare
from qtestbed.cli.demo import ghz_qasm2
from qtestbed.client import Client, submit_request
from qtestbed.testing import UNLIMITED_ADMISSION, LocalFacility
from qtestbed.v1 import devices_pb2, devices_pb2_grpc, jobs_pb2, jobs_pb2_grpc

HIDDEN_DEVICE = "sim-restricted"
VISIBLE_DEVICE = "sim-open"
# Absent device ids as long as the hidden one, so the id's length is no difference either.
ABSENT_DEVICES = ("sim-vanished-a", "sim-vanished-b", "sim-vanished-c")
TIMEOUT_S = 10.0
RPCS = (
    *("GetDevice", "SubmitJob", "SubmitJobs", "OpenSession"),
    *("GetJob", "WatchJob", "CancelJob", "GetResult", "GetResultProof"),
    *("GetSession", "CloseSession"),
)

Answer = tuple[str, str]  # gRPC status name and details


@dataclass(frozen=True, kw_only=True, slots=True)
class Plan:
    pairs: int  # rounds per RPC; each gives one test pair and one control pair
    warmup: int  # rounds per RPC before measuring
    limit_s: float  # per RPC, measuring stops here even if `pairs` is not reached


FULL = Plan(pairs=1000, warmup=50, limit_s=90.0)
QUICK = Plan(pairs=30, warmup=3, limit_s=5.0)


@dataclass(frozen=True, kw_only=True, slots=True)
class Case:
    """One RPC, the id of what is hidden from the caller, and three ids that name nothing."""

    rpc: str
    hidden: str
    label: str  # what `hidden` is to the caller: "hidden" (a device) or "foreign"
    absent: tuple[str, str, str]
    call: Callable[[str], object]  # raises grpc.RpcError on a refusal


@dataclass(frozen=True, kw_only=True, slots=True)
class Result:
    case: Case
    test: Comparison  # hidden against absent A
    control: Comparison  # absent B against absent C


def answer_of(call: Callable[[str], object], ident: str) -> Answer:
    try:
        call(ident)
    except grpc.RpcError as exc:
        return exc.code().name, exc.details() or ""
    return "OK", ""


def device_calls(channel: grpc.Channel) -> dict[str, Callable[[str], object]]:
    """The RPCs that name a device, each as a call of one device id."""
    devices = devices_pb2_grpc.DeviceServiceStub(channel)
    jobs = jobs_pb2_grpc.JobServiceStub(channel)
    payload = ghz_qasm2(3)
    # Built before timing; a NOT_FOUND comes before any idempotency key is looked at.
    single = {
        d: submit_request(payload, device_id=d, shots=10) for d in (HIDDEN_DEVICE, *ABSENT_DEVICES)
    }
    # A batch whose first job is fine: the refusal of the second comes after real work.
    first = submit_request(payload, device_id=VISIBLE_DEVICE, shots=10)
    batches = {d: jobs_pb2.SubmitJobsRequest(jobs=[first, r]) for d, r in single.items()}
    return {
        "GetDevice": lambda i: devices.GetDevice(
            devices_pb2.GetDeviceRequest(device_id=i), timeout=TIMEOUT_S
        ),
        "SubmitJob": lambda i: jobs.SubmitJob(single[i], timeout=TIMEOUT_S),
        "SubmitJobs": lambda i: jobs.SubmitJobs(batches[i], timeout=TIMEOUT_S),
        "OpenSession": lambda i: jobs.OpenSession(
            jobs_pb2.OpenSessionRequest(device_id=i), timeout=TIMEOUT_S
        ),
    }


def job_calls(channel: grpc.Channel) -> dict[str, Callable[[str], object]]:
    """The RPCs that name a job."""
    jobs = jobs_pb2_grpc.JobServiceStub(channel)
    return {
        "GetJob": lambda i: jobs.GetJob(jobs_pb2.GetJobRequest(job_id=i), timeout=TIMEOUT_S),
        "WatchJob": lambda i: list(
            jobs.WatchJob(jobs_pb2.WatchJobRequest(job_id=i), timeout=TIMEOUT_S)
        ),
        "CancelJob": lambda i: jobs.CancelJob(
            jobs_pb2.CancelJobRequest(job_id=i), timeout=TIMEOUT_S
        ),
        "GetResult": lambda i: jobs.GetResult(
            jobs_pb2.GetResultRequest(job_id=i), timeout=TIMEOUT_S
        ),
        "GetResultProof": lambda i: jobs.GetResultProof(
            jobs_pb2.GetResultProofRequest(job_id=i), timeout=TIMEOUT_S
        ),
    }


def session_calls(channel: grpc.Channel) -> dict[str, Callable[[str], object]]:
    """The RPCs that name a session."""
    jobs = jobs_pb2_grpc.JobServiceStub(channel)
    return {
        "GetSession": lambda i: jobs.GetSession(
            jobs_pb2.GetSessionRequest(session_id=i), timeout=TIMEOUT_S
        ),
        "CloseSession": lambda i: jobs.CloseSession(
            jobs_pb2.CloseSessionRequest(session_id=i), timeout=TIMEOUT_S
        ),
    }


def fresh_ids() -> tuple[str, str, str]:
    """Three ids of the same form as the broker's (uuid4 hex) that name nothing."""
    return uuid.uuid4().hex, uuid.uuid4().hex, uuid.uuid4().hex


def all_cases(alice: Client, foreign_job: str, foreign_session: str) -> list[Case]:
    channel = alice.channel
    job_ids, session_ids = fresh_ids(), fresh_ids()
    found = [
        Case(rpc=rpc, hidden=HIDDEN_DEVICE, label="hidden", absent=ABSENT_DEVICES, call=call)
        for rpc, call in device_calls(channel).items()
    ]
    found += [
        Case(rpc=rpc, hidden=foreign_job, label="foreign", absent=job_ids, call=call)
        for rpc, call in job_calls(channel).items()
    ]
    found += [
        Case(rpc=rpc, hidden=foreign_session, label="foreign", absent=session_ids, call=call)
        for rpc, call in session_calls(channel).items()
    ]
    return found


def differing_answers(case: Case) -> list[str]:
    """Problems with the four answers: each must be NOT_FOUND, the same but for the id."""
    ids = (case.hidden, *case.absent)
    answers = {i: answer_of(case.call, i) for i in ids}
    problems = [
        f"{case.rpc}({i}): {a[0]} {a[1]}" for i, a in answers.items() if a[0] != "NOT_FOUND"
    ]
    shapes = {(code, details.replace(i, "<id>")) for i, (code, details) in answers.items()}
    if len(shapes) > 1:
        problems.append(f"{case.rpc}: the answers differ: {sorted(shapes)}")
    return problems


def measure(case: Case, plan: Plan, rng: random.Random) -> Result:
    """`plan.pairs` rounds, each calling the four ids once in a random order."""
    ids = (case.hidden, *case.absent)
    for _ in range(plan.warmup):
        for ident in ids:
            answer_of(case.call, ident)
    times: dict[str, list[float]] = {i: [] for i in ids}
    gc.collect()
    deadline = time.perf_counter() + plan.limit_s
    while len(times[case.hidden]) < plan.pairs and time.perf_counter() < deadline:
        order = list(ids)
        rng.shuffle(order)
        for ident in order:
            began = time.perf_counter()
            code, details = answer_of(case.call, ident)
            times[ident].append(time.perf_counter() - began)
            if code != "NOT_FOUND":  # a limit answered, not the hidden-or-absent path
                raise SystemExit(f"{case.rpc}({ident}) answered {code} while measured: {details}")
    a, b, c = case.absent
    return Result(
        case=case,
        test=compare(times[case.hidden], times[a]),
        control=compare(times[b], times[c]),
    )


def row(rpc: str, what: str, c: Comparison) -> str:
    return (
        f"  {rpc:<12} {what:<16} {c.pairs:>5}"
        f"  {c.median_first * 1e6:8.1f} {c.median_second * 1e6:8.1f}"
        f"  {c.median_difference * 1e6:+8.1f}  {c.ratio:6.3f}"
        f"  {c.sign.above:>4}/{c.sign.below:<4} p={c.sign.p:<8.2g}"
        f"  z={c.signed_rank.z:+6.2f} p={c.signed_rank.p:.2g}"
    )


def report(results: list[Result]) -> None:
    print(
        "\n  rpc          compared          pairs  p50 1st  p50 2nd  med diff   ratio"
        "  sign test (1st slower/faster)  Wilcoxon signed-rank\n"
        "                                          (us)     (us)     (us)"
    )
    for r in results:
        print(row(r.case.rpc, f"{r.case.label}/absent", r.test))
        print(row("", "absent/absent", r.control))
    print()
    for r in results:
        t, c = r.test, r.control
        print(
            f"RATIO {r.case.rpc} {r.case.label}/absent = {t.ratio:.3f}  "
            f"(control absent/absent = {c.ratio:.3f}; median difference "
            f"{t.median_difference * 1e6:+.1f} us against {c.median_difference * 1e6:+.1f} us; "
            f"sign test p {t.sign.p:.2g} against {c.sign.p:.2g}; "
            f"Wilcoxon p {t.signed_rank.p:.2g} against {c.signed_rank.p:.2g})"
        )


def foreign_objects(bob: Client) -> tuple[str, str]:
    """A queued job and an open session of bob's (no driver: the job stays queued)."""
    job = bob.submit(ghz_qasm2(3), device_id=VISIBLE_DEVICE, shots=10).job.job_id
    session = bob.open_session(HIDDEN_DEVICE).session_id
    return job, session


def hidden_exists(alice: Client, bob: Client) -> list[str]:
    """The hidden device must exist (bob sees it) and be hidden from alice."""
    problems = []
    if bob.device(HIDDEN_DEVICE).device_id != HIDDEN_DEVICE:
        problems.append(f"bob does not see {HIDDEN_DEVICE}")
    if any(d.device_id == HIDDEN_DEVICE for d in alice.devices()):
        problems.append(f"alice sees {HIDDEN_DEVICE}: it is not hidden from her")
    return problems


def run(root: Path, plan: Plan, seed: int, only: Sequence[str]) -> int:
    # Limits out of the way: every measured call must reach the hidden-or-absent path.
    with LocalFacility(root, limits=UNLIMITED_ADMISSION) as facility:
        facility.start_broker()
        alice, bob = facility.client("alice"), facility.client("bob")
        problems = hidden_exists(alice, bob)
        foreign_job, foreign_session = foreign_objects(bob)
        chosen = [c for c in all_cases(alice, foreign_job, foreign_session) if c.rpc in only]
        for case in chosen:
            problems += differing_answers(case)
        if problems:
            print("ERRORS:", *problems, sep="\n  ")
            return 1
        rng = random.Random(seed)
        results = []
        for case in chosen:
            results.append(measure(case, plan, rng))
            print(f"  measured {case.rpc}: {results[-1].test.pairs} rounds", flush=True)
    report(results)
    return 0


def code_under_test() -> str:
    import broker

    assert broker.__file__ is not None
    return str(Path(broker.__file__).resolve().parents[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="a few rounds: a smoke test")
    parser.add_argument("--seed", type=int, default=None, help="seed of the call order")
    parser.add_argument(
        "--rpc", action="append", choices=RPCS, help="measure only this RPC (repeatable)"
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    kind = "quick smoke run: numbers mean nothing" if args.quick else "full"
    print(
        f"qtestbed hidden-vs-absent bench ({kind})\n"
        f"  code: {code_under_test()}\n"
        f"  {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"grpcio {grpc.__version__}, load average {os.getloadavg()[0]:.2f} at start\n"
        f"  per RPC: {plan.warmup} warm-up rounds, then at most {plan.pairs} rounds / "
        f"{plan.limit_s:.0f} s; call order seed {seed}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="qtestbed-bench-hidden-") as tmp:
        return run(Path(tmp) / "facility", plan, seed, args.rpc or RPCS)


if __name__ == "__main__":
    sys.exit(main())
