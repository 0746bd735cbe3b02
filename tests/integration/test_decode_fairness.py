"""One principal cannot stall everyone's validation (issue 15.1), on a real broker process.

alice floods the broker with concurrent 200 KiB OpenQASM 3 submissions, each parsing for seconds
and past the deadline this facility gives a payload of that size (1 s + 1 ms per KiB). With a
pool of two decoder children and a share of one per principal, her calls past her share are
refused at once with RESOURCE_EXHAUSTED and a retry delay; her admitted payloads are killed at
their deadline and their children replaced. bob's QPY and OpenQASM 2 submissions, made while her
flood is being refused, are admitted and validated, and the pool still serves afterwards."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from qtestbed.cli.demo import ghz_qasm2, ghz_qpy
from qtestbed.client import QtestbedError
from qtestbed.testing import LocalFacility, eventually
from qtestbed.v1 import jobs_pb2, jobs_pb2_grpc
from tests.integration.support import audit_entries, metric_value, scrape

FLOOD = 8
# About 200 KiB of valid OpenQASM 3 (four qubits, depth 6400): seconds of parsing.
HEAVY = (
    b'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[4] q;\nbit[4] c;\n'
    + b"h q[0];\nh q[1];\nh q[2];\nh q[3];\n" * (200 * 1024 // 32)
    + b"c = measure q;\n"
)
DECODING = (
    "[decoding]\nprocesses = 2\nper_principal = 1\n"
    "deadline_base_seconds = 1.0\ndeadline_per_kib_seconds = 0.001\nretry_after_seconds = 2.0\n\n"
)


# The same pool and share, but a deadline long enough that HEAVY is decoded to its end.
PATIENT = DECODING.replace("deadline_base_seconds = 1.0", "deadline_base_seconds = 60.0")


def _decoding(root: Path, section: str = DECODING) -> None:
    """Replace the generated [decoding] section with this test's (kept by `_write_timing`)."""
    path = root / "broker.toml"
    text = path.read_text()
    start = text.index("[decoding]")
    end = text.index("[", start + 1)
    path.write_text(text[:start] + section + text[end:])


def _children(pid: int) -> set[int]:
    """The broker's decoder children (spawned by multiprocessing; not its resource tracker)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            except FileNotFoundError:
                continue  # gone meanwhile
            if b"spawn_main" in cmdline:
                found.add(int(child))
    return found


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalFacility]:
    # Refusals are audited once per window: a short one, so the test sees the entries.
    with LocalFacility(tmp_path / "facility", timing={"front_door_audit_seconds": 1.0}) as fac:
        _decoding(fac.root)
        fac.start_broker_process()
        yield fac


def test_a_flooding_principal_is_refused_past_its_share_while_another_is_served(
    broker: LocalFacility,
) -> None:
    assert broker.broker_process is not None
    decoders_before = _children(broker.broker_process.pid)
    assert len(decoders_before) == 2  # the pool: two decoder children
    alice, bob = broker.client("alice"), broker.client("bob")
    refused_once = threading.Event()

    def heavy(_: int) -> QtestbedError | None:
        try:
            alice.submit(HEAVY, device_id="sim-open", shots=10, fmt="qasm3")
        except QtestbedError as exc:
            if exc.code == "RESOURCE_EXHAUSTED":
                refused_once.set()
            return exc
        return None

    with ThreadPoolExecutor(max_workers=FLOOD) as flood:
        outcomes = flood.map(heavy, range(FLOOD))
        assert refused_once.wait(timeout=120), "none of alice's calls was refused"
        # During the flood: bob's calls are admitted and validated (the jobs are queued).
        for payload, fmt in ((ghz_qpy(3), "qpy"), (ghz_qasm2(3), "qasm2")):
            accepted = bob.submit(payload, device_id="sim-open", shots=10, fmt=fmt)
            assert accepted.created
            assert accepted.job.circuit_digest
        answers = list(outcomes)

    errors = [a for a in answers if a is not None]
    assert len(errors) == FLOOD  # none of alice's heavy payloads got through
    refused = [e for e in errors if e.code == "RESOURCE_EXHAUSTED"]
    killed = [e for e in errors if e.code == "INVALID_ARGUMENT"]
    assert len(refused) + len(killed) == FLOOD, [str(e) for e in errors]
    assert refused
    assert killed
    for error in refused:
        assert error.retry_after_seconds == 2.0
        assert error.rule_id == "decode.principal_share"
        assert "retry in 2 s" in error.message
    for error in killed:
        assert "took longer than" in error.message
        assert "1.2 s" in error.message  # 1 s + 1 ms x 200 KiB: the deadline grew with the size

    # Each killed child was replaced: two children again, not all of them the first ones.
    pid = broker.broker_process.pid
    eventually(
        lambda: len(_children(pid)) == 2 and _children(pid) != decoders_before,
        what="the killed decoder children to be replaced",
    )
    # The pool keeps serving, alice included, once her share is free again.
    assert alice.submit(ghz_qasm2(2), device_id="sim-open", shots=10, fmt="qasm2").created
    assert bob.submit(ghz_qpy(2), device_id="sim-open", shots=10, fmt="qpy").created
    owners = sorted(job.owner for job in bob.list_jobs())
    assert owners == ["bob", "bob", "bob"]

    # Counted by reason, and audited in aggregate at shutdown (one entry per window).
    text = scrape(broker)
    assert metric_value(text, "qtestbed_decode_refusals_total", reason="principal_share") == len(
        refused
    )

    def audited() -> int:
        entries = audit_entries(broker, kind="decode.refused")
        assert {(e.subject, e.detail["reason"]) for e in entries} <= {("alice", "principal_share")}
        return sum(int(e.detail["count"]) for e in entries)

    eventually(lambda: audited() == len(refused), what="the refusals to be audited")


@pytest.fixture
def patient(tmp_path: Path) -> Iterator[LocalFacility]:
    with LocalFacility(tmp_path / "patient") as fac:
        _decoding(fac.root, PATIENT)
        fac.start_broker_process()
        yield fac


def test_a_call_given_up_keeps_its_share_until_its_decode_is_done(patient: LocalFacility) -> None:
    """alice's deadline passes while her payload is decoding, and she sends it again at once:
    the decode still runs, so every resend is refused at once while bob is admitted; once the
    abandoned decode has finished, she is admitted again."""
    alice, bob = patient.client("alice"), patient.client("bob")
    stub = jobs_pb2_grpc.JobServiceStub(alice.channel)

    def send(timeout: float) -> str:
        circuit = jobs_pb2.Circuit(format=jobs_pb2.CIRCUIT_FORMAT_OPENQASM3, payload=HEAVY)
        request = jobs_pb2.SubmitJobRequest(device_id="sim-open", circuit=circuit, shots=10)
        try:
            stub.SubmitJob(request, timeout=timeout)
        except grpc.RpcError as exc:
            return str(exc.code().name)
        return "OK"

    assert send(0.3) == "DEADLINE_EXCEEDED"  # given up; the broker is still decoding it
    resent = [send(5.0) for _ in range(4)]
    assert resent == ["RESOURCE_EXHAUSTED"] * 4
    assert bob.submit(ghz_qasm2(2), device_id="sim-open", shots=10, fmt="qasm2").created
    text = scrape(patient)
    assert metric_value(text, "qtestbed_decode_refusals_total", reason="principal_share") == 4

    def admitted() -> bool:
        try:
            return alice.submit(ghz_qasm2(2), device_id="sim-open", shots=10, fmt="qasm2").created
        except QtestbedError as exc:
            if exc.code != "RESOURCE_EXHAUSTED":
                raise
            return False

    eventually(admitted, timeout=120, every=0.5, what="alice's abandoned decode to finish")
