"""Policy decision throughput with the shipped Cedar policy set, beside a JSON baseline, and
the policy's share of SubmitJob time in a running broker.

    .venv/bin/python bench/bench_policy.py [--quick]

Three request shapes against broker/policy/default.cedar (loaded once), each evaluated by Cedar
every time (`PolicyEngine.evaluate`; the broker's `decide` also answers repeats of the same
request within the same second from a cache, which the SubmitJob section below includes):
  allow    a cleared researcher submits to an export-controlled device (one Cedar call);
  forbid   a dispatch forbidden by the export-jurisdiction rule (one Cedar call);
  deny     a default deny whose reason comes from the per-clause probes (two Cedar calls).
Baseline: one `json.dumps` of the same request's Cedar entities and context, the serialisation
cedarpy does on every call anyway, so `RATIO` says how many JSON encodings one decision costs.

Share of SubmitJob: an embedded broker (SQLite, the `qtestbed init` facility, no driver so
jobs stay queued) serves sequential SubmitJob calls from this process; the clearance gate is
timed around each call (attributes from the registries, the Cedar decision, the reason), and
`RATIO gate/SubmitJob` is the gate's time over the SubmitJob round trips' in the same window.
Each SubmitJob asks the gate twice: ViewDevice (is the device visible?) and SubmitJob.

Every loop stops at a count or a time limit, whichever comes first. Rates are per CPU second of
this process (time.process_time); each is the median of the rounds, wall-clock median beside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from broker.policy import (
    Action,
    DeviceAttributes,
    Environment,
    JobAttributes,
    PolicyEngine,
    PolicyRequest,
    PrincipalAttributes,
)
from broker.policy.translate import to_cedar
from qtestbed.cli.demo import ghz_qasm2
from qtestbed.testing import LocalFacility

NOW = 1_790_000_000


def requests() -> dict[str, PolicyRequest]:
    allow = PolicyRequest(
        principal=PrincipalAttributes(
            name="alice",
            tier="restricted",
            tier_rank=1,
            nationality="US",
            jurisdictions=frozenset({"US"}),
            projects=frozenset({"qsim"}),
            clearance_expires_at=NOW + 86_400,
            training={"dual-use-awareness": NOW + 86_400},
        ),
        device=DeviceAttributes(
            device_id="qpu-1",
            tier="restricted",
            tier_rank=1,
            jurisdiction="US",
            export_class="4A906.a",
            export_licence="EAR-4A906",
        ),
        action=Action.SUBMIT_JOB,
        environment=Environment(now=NOW, attestation="affirming"),
        job=JobAttributes(project="qsim", data_label="TLP:GREEN", shots=1000, qubits=5),
    )
    foreign = dataclasses.replace(allow.principal, nationality="DE", jurisdictions=frozenset())
    forbid = dataclasses.replace(allow, principal=foreign, action=Action.DISPATCH_JOB)
    lower = dataclasses.replace(allow.principal, tier="open", tier_rank=0)
    deny = dataclasses.replace(allow, principal=lower)
    return {"allow": allow, "forbid": forbid, "deny": deny}


def rate(fn: Callable[[], object], count: int, limit_s: float) -> tuple[float, float]:
    """Operations per CPU second and per wall second for up to `count` calls or `limit_s`."""
    done = 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    deadline = wall0 + limit_s
    while done < count and time.perf_counter() < deadline:
        for _ in range(50):
            fn()
        done += 50
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return done / max(cpu, 1e-9), done / max(wall, 1e-9)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few short rounds (smoke test)")
    args = parser.parse_args(argv)
    rounds, count, limit = (2, 300, 0.3) if args.quick else (5, 20_000, 3.0)
    engine = PolicyEngine.load_files()
    cases = requests()
    expected = {"allow": True, "forbid": False, "deny": False}
    errors = [n for n, r in cases.items() if engine.evaluate(r).allowed != expected[n]]
    print(f"python {platform.python_version()}  cedarpy {_cedarpy_version()}  rounds {rounds}")
    if errors:
        print(f"ERRORS: unexpected decisions for {errors}")
        return 1
    allow_cedar = to_cedar(cases["allow"])
    measured: dict[str, list[tuple[float, float]]] = {n: [] for n in [*cases, "json"]}
    for _ in range(rounds):
        for name, request in cases.items():
            measured[name].append(rate(functools.partial(engine.evaluate, request), count, limit))
        measured["json"].append(rate(lambda: json.dumps(allow_cedar), count * 20, limit))
    medians = {n: _median(v) for n, v in measured.items()}
    for name in cases:
        cpu, wall = medians[name]
        print(f"  decide {name:<8} {cpu:>12,.0f} /CPU-s  ({wall:,.0f} /wall-s)")
    json_cpu, json_wall = medians["json"]
    print(f"  json.dumps      {json_cpu:>12,.0f} /CPU-s  ({json_wall:,.0f} /wall-s)")
    for name in cases:
        cpu = medians[name][0]
        print(
            f"RATIO json.dumps/decide {name:<8} = {json_cpu / cpu:,.1f}  "
            f"(decide {cpu:,.0f}/CPU-s, {1e6 / cpu:,.1f} us per decision)"
        )
    submits, seconds = (40, 5.0) if args.quick else (1500, 60.0)
    return submit_share(submits, seconds)


def submit_share(count: int, limit_s: float) -> int:
    """Time the clearance gate inside a real broker while it serves SubmitJob."""
    with (
        tempfile.TemporaryDirectory(prefix="qtestbed-bench-policy-") as tmp,
        LocalFacility(Path(tmp) / "facility") as facility,
    ):
        facility.start_broker()
        assert facility.embedded is not None
        assert facility.embedded.broker is not None
        assert facility.embedded.broker.components is not None
        gate = facility.embedded.broker.components.registries.gate
        spent: list[float] = []
        # ViewDevice is asked through visible_by_id (the lookup of the named device), SubmitJob
        # through check: both are the gate's time.
        for name in ("check", "visible_by_id"):
            setattr(gate, name, _timed(getattr(gate, name), spent))
        client = facility.client("alice")
        payload = ghz_qasm2(3)
        for _ in range(20):  # warm the channel, the decoder and the store
            client.submit(payload, device_id="sim-open", shots=10)
        spent.clear()
        latencies: list[float] = []
        deadline = time.perf_counter() + limit_s
        while len(latencies) < count and time.perf_counter() < deadline:
            began = time.perf_counter()
            client.submit(payload, device_id="sim-open", shots=10)
            latencies.append(time.perf_counter() - began)
    gate_total, submit_total = sum(spent), sum(latencies)
    per_submit = len(spent) / max(len(latencies), 1)
    p50_ms = statistics.median(latencies) * 1e3
    print(
        f"SUBMIT {len(latencies)} sequential SubmitJob: p50 {p50_ms:.2f} ms,"
        f" gate calls per submit {per_submit:.1f},"
        f" gate p50 {statistics.median(spent) * 1e6:,.0f} us per call"
        f" ({len(spent) / max(gate_total, 1e-9):,.0f} gate decisions per second of gate time)"
    )
    print(
        f"RATIO gate/SubmitJob = {gate_total / max(submit_total, 1e-9):.3f}  "
        f"(share of SubmitJob round-trip time spent in clearance decisions)"
    )
    return 0


def _timed(fn: Callable[..., Any], spent: list[float]) -> Callable[..., Any]:
    """`fn`, adding each call's wall time to `spent` (instruments one instance only)."""

    def timed(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - began)

    return timed


def _median(samples: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples)


def _cedarpy_version() -> str:
    from importlib.metadata import version

    return version("cedarpy")


if __name__ == "__main__":
    sys.exit(main())
