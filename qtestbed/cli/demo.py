"""`qtestbed demo`: a whole facility in a temporary folder, end to end, then a clean shutdown.

An embedded broker on SQLite, two simulated testbeds at different tiers (driver processes),
two researchers at different tiers submitting sample circuits, one refused for clearance.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtestbed.cli.errors import guarded
from qtestbed.cli.output import print_json
from qtestbed.client import Client, QtestbedError
from qtestbed.v1 import jobs_pb2

if TYPE_CHECKING:
    from broker.settings import BrokerSettings


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="run a complete local facility end to end, then shut down")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--keep", type=Path, help="build the facility in this folder and keep it")
    p.set_defaults(handler=cmd_demo)


@dataclass(frozen=True, kw_only=True, slots=True)
class Submission:
    label: str
    researcher: str
    device: str
    fmt: str
    payload: bytes
    shots: int
    project: str = ""


@dataclass(kw_only=True, slots=True)
class Outcome:
    label: str
    researcher: str
    device: str
    format: str
    state: str
    job_id: str = ""
    # The three most frequent outcomes: bitstring -> count, most frequent first.
    top_outcomes: dict[str, int] = field(default_factory=dict)
    receipt: str = ""
    refusal: str = ""
    rule_id: str = ""


def ghz_qasm2(n: int) -> bytes:
    body = "".join(f"cx q[{i}],q[{i + 1}];\n" for i in range(n - 1))
    return (
        f'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[{n}];\ncreg c[{n}];\n'
        f"h q[0];\n{body}measure q -> c;\n"
    ).encode()


def bell_qasm3() -> bytes:
    return (
        b'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[2] q;\nbit[2] c;\n'
        b"h q[0];\ncx q[0], q[1];\nc = measure q;\n"
    )


def ghz_qpy(n: int) -> bytes:
    from qiskit import QuantumCircuit, qpy

    circuit = QuantumCircuit(n, n, name=f"ghz{n}")
    circuit.h(0)
    for i in range(n - 1):
        circuit.cx(i, i + 1)
    circuit.measure(range(n), range(n))
    buffer = io.BytesIO()
    qpy.dump(circuit, buffer)
    return buffer.getvalue()


def _submissions() -> list[Submission]:
    return [
        Submission(
            label="GHZ-5",
            researcher="alice",
            device="sim-open",
            fmt="qasm2",
            payload=ghz_qasm2(5),
            shots=1000,
        ),
        Submission(
            label="Bell (OpenQASM 3)",
            researcher="alice",
            device="sim-open",
            fmt="qasm3",
            payload=bell_qasm3(),
            shots=500,
        ),
        Submission(
            label="GHZ-4 (QPY, noisy)",
            researcher="bob",
            device="sim-restricted",
            fmt="qpy",
            payload=ghz_qpy(4),
            shots=1000,
        ),
        Submission(
            label="GHZ-3, other project",
            researcher="alice",
            device="sim-open",
            fmt="qasm2",
            payload=ghz_qasm2(3),
            shots=100,
            project="quantum-sensing",
        ),
        Submission(
            label="GHZ-3 above tier",
            researcher="alice",
            device="sim-restricted",
            fmt="qasm2",
            payload=ghz_qasm2(3),
            shots=100,
        ),
    ]


def _run_one(client: Client, sub: Submission) -> Outcome:
    out = Outcome(
        label=sub.label, researcher=sub.researcher, device=sub.device, format=sub.fmt, state=""
    )
    try:
        job = client.submit(
            sub.payload, device_id=sub.device, shots=sub.shots, fmt=sub.fmt, project=sub.project
        ).job
    except QtestbedError as exc:
        out.state, out.refusal, out.rule_id = exc.code, exc.message, exc.rule_id
        return out
    out.job_id = job.job_id
    for update in client.watch(job.job_id, timeout=120):
        job = update
    out.state = jobs_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_")
    if out.state == "COMPLETED":
        result = client.result(job.job_id)
        out.top_outcomes = _top(result.counts)
        problems = client.verify_result(result, job)
        out.receipt = "valid" if not problems else "INVALID: " + "; ".join(problems)
    else:
        out.refusal = job.reason
    return out


def _top(counts: Mapping[str, int]) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda kv: -kv[1])[:3])


def _top_text(top: Mapping[str, int]) -> str:
    return " ".join(f"{bits}:{count}" for bits, count in top.items())


def _sample(text: str) -> list[str]:
    wanted = (
        "qtestbed_jobs_total",
        "qtestbed_clearance_denials_total",
        "qtestbed_attestation_verifications_total",
    )
    return [line for line in text.splitlines() if line.startswith(wanted)]


def run_demo(root: Path) -> dict[str, Any]:
    from qtestbed.testing import LocalFacility

    started = time.time() - 1
    with LocalFacility(root) as facility:
        addresses = facility.start_broker()
        for device in ("sim-open", "sim-restricted"):
            facility.start_driver(device)
        clients = {name: facility.client(name) for name in ("alice", "bob")}
        for device in ("sim-open", "sim-restricted"):
            facility.wait_available(clients["bob"], device)
        outcomes = [_run_one(clients[s.researcher], s) for s in _submissions()]
        outcomes.append(_through_qiskit(clients["alice"]))
        metrics = _sample(facility.scrape())  # as the monitoring system: mutual TLS
        settings = facility.settings()
    report = _report_summary(settings, started)
    # The refused job names its rule; the device above alice's tier is invisible to her,
    # answered exactly as a device that does not exist.
    ok = (
        all(o.state == "COMPLETED" and o.receipt == "valid" for o in outcomes[:3])
        and outcomes[3].state == "PERMISSION_DENIED"
        and outcomes[3].rule_id != ""
        and outcomes[4].state == "NOT_FOUND"
        and outcomes[5].state == "COMPLETED"
        and outcomes[5].receipt == "valid"
    )
    return {
        "facility": str(root),
        "broker": asdict(addresses),
        "jobs": [asdict(o) for o in outcomes],
        "metrics_sample": metrics,
        "report": report,
        "ok": ok,
    }


def _through_qiskit(client: Client) -> Outcome:
    """What a researcher writes in Qiskit: transpile for the backend, run in a session."""
    from qiskit import QuantumCircuit, transpile

    from qtestbed.qiskit import QtestbedProvider, QtestbedSession

    out = Outcome(
        label="GHZ-3 via Qiskit", researcher="alice", device="sim-open", format="qiskit", state=""
    )
    circuit = QuantumCircuit(3)
    circuit.h(0)
    circuit.cx(0, 1)
    circuit.cx(1, 2)
    circuit.measure_all()
    backend = QtestbedProvider(client).backend("sim-open")
    with QtestbedSession(backend, max_seconds=120) as session:
        job = backend.run(transpile(circuit, backend), shots=500, session=session)
        counts = job.result().get_counts()  # receipts verified before counts are handed out
    out.state, out.receipt = "COMPLETED", "valid"
    out.job_id = job.job_id()
    out.top_outcomes = _top(counts)
    return out


def _report_summary(settings: BrokerSettings, since: float) -> list[str]:
    """The transparency report's first lines for the demo's own activity."""
    from broker.report.collect import collect
    from broker.report.render_md import render_markdown

    report = collect(settings, since=since, until=time.time() + 1, min_count=1)
    lines = [line for line in render_markdown(report).splitlines() if line.strip()]
    return lines[:12]


def _print_table(summary: dict[str, Any]) -> None:
    print(f"facility: {summary['facility']}")
    print(f"broker gRPC {summary['broker']['grpc']}, driver link {summary['broker']['link']}")
    print(
        f"metrics: {summary['broker']['metrics']}  (served while the demo ran, over mutual TLS "
        "to the scraper identity users/prometheus only)\n"
    )
    print(f"{'JOB':<22}{'WHO':<7}{'DEVICE':<16}{'STATE':<19}{'TOP OUTCOMES':<32}RECEIPT")
    for job in summary["jobs"]:
        print(
            f"{job['label']:<22}{job['researcher']:<7}{job['device']:<16}{job['state']:<19}"
            f"{_top_text(job['top_outcomes']):<32}{job['receipt']}"
        )
        if job["refusal"]:
            rule = f" [rule {job['rule_id']}]" if job["rule_id"] else ""
            print(f"  refused{rule}: {job['refusal']}")
    print("\nsample of the metrics scrape:")
    for line in summary["metrics_sample"]:
        print(f"  {line}")
    print("\nthe start of the transparency report (qtestbed report --since ...):")
    for line in summary["report"]:
        print(f"  {line}")
    print("\ndemo " + ("succeeded" if summary["ok"] else "FAILED"))


@guarded()
def cmd_demo(args: argparse.Namespace) -> int:
    if args.keep is not None:
        summary = run_demo(args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="qtestbed-demo-") as tmp:
            summary = run_demo(Path(tmp) / "facility")
    if args.json:
        print_json(summary)
    else:
        _print_table(summary)
    return 0 if summary["ok"] else 1
