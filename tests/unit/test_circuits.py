"""Circuit validation at the broker edge: what is accepted, and how each rejection reads."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from qiskit import QuantumCircuit, qasm2, qasm3, qpy

from broker.errors import BrokerError, ErrorCode
from broker.jobs.circuits import (
    CircuitLimits,
    CircuitRejected,
    IsolatedDecoder,
    load_circuit,
    validate_circuit,
)
from broker.jobs.model import Circuit
from qtestbed.shared import circuits as codec
from qtestbed.shared.circuits import CircuitFormat

QASM2, QASM3, QPY = CircuitFormat.OPENQASM2, CircuitFormat.OPENQASM3, CircuitFormat.QPY
LIMITS = CircuitLimits()

GHZ_QASM2 = """OPENQASM 2.0;
include "qelib1.inc";
qreg q[5];
creg c[5];
h q[0];
cx q[0],q[1];
cx q[1],q[2];
cx q[2],q[3];
cx q[3],q[4];
measure q -> c;
"""

GHZ_QASM3 = """OPENQASM 3.0;
include "stdgates.inc";
qubit[5] q;
bit[5] c;
h q[0];
cx q[0], q[1];
cx q[1], q[2];
cx q[2], q[3];
cx q[3], q[4];
c = measure q;
"""


def ghz(n: int = 5) -> QuantumCircuit:
    qc = QuantumCircuit(n, n)
    qc.h(0)
    for i in range(n - 1):
        qc.cx(i, i + 1)
    qc.measure(range(n), range(n))
    return qc


def qpy_bytes(*circuits: QuantumCircuit) -> bytes:
    buffer = io.BytesIO()
    qpy.dump(list(circuits), buffer)
    return buffer.getvalue()


GHZ_PAYLOADS = {QASM2: GHZ_QASM2.encode(), QASM3: GHZ_QASM3.encode(), QPY: qpy_bytes(ghz())}


def rejected(
    fmt: CircuitFormat, payload: bytes, shots: int = 100, limits: CircuitLimits = LIMITS
) -> CircuitRejected:
    with pytest.raises(CircuitRejected) as caught:
        validate_circuit(fmt, payload, shots, limits)
    return caught.value


def qasm2_program(body: str, qubits: int = 2) -> bytes:
    header = f'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[{qubits}];\ncreg c[{qubits}];\n'
    return (header + body).encode()


def qasm3_program(body: str, qubits: int = 2) -> bytes:
    header = f'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[{qubits}] q;\nbit[{qubits}] c;\n'
    return (header + body).encode()


# ------------------------------------------------------------------------------------ accepted


@pytest.mark.parametrize("fmt", [QASM2, QASM3, QPY], ids=lambda f: f.value)
def test_ghz_is_accepted_in_every_format(fmt: CircuitFormat) -> None:
    payload = GHZ_PAYLOADS[fmt]
    circuit = validate_circuit(fmt, payload, 1000, LIMITS)
    assert circuit.format is fmt
    assert circuit.payload == payload
    assert circuit.digest == hashlib.sha256(payload).hexdigest()
    assert (circuit.num_qubits, circuit.depth) == (5, 6)
    assert load_circuit(circuit).depth() == 6  # our depth agrees with Qiskit's on flat circuits


def test_rejection_is_an_invalid_argument_broker_error() -> None:
    error = rejected(QASM2, b"OPENQASM 2.0; qreg")
    assert isinstance(error, BrokerError)
    assert error.code is ErrorCode.INVALID_ARGUMENT
    assert str(error) == error.detail


def test_domain_format_is_the_shared_codec_format() -> None:
    assert CircuitFormat is codec.CircuitFormat
    assert validate_circuit(QASM2, GHZ_PAYLOADS[QASM2], 10).format is codec.CircuitFormat.OPENQASM2


def test_load_circuit_returns_the_circuit_and_checks_the_digest() -> None:
    circuit = validate_circuit(QASM2, GHZ_PAYLOADS[QASM2], 10, LIMITS)
    qc = load_circuit(circuit)
    assert qc.num_qubits == 5
    assert qc.count_ops()["measure"] == 5
    with pytest.raises(CircuitRejected, match="does not match its digest") as caught:
        load_circuit(dataclasses.replace(circuit, digest="0" * 64))
    assert caught.value.field == "digest"


def test_load_circuit_refuses_claims_that_do_not_match_the_payload() -> None:
    circuit = validate_circuit(QASM3, GHZ_PAYLOADS[QASM3], 10, LIMITS)
    with pytest.raises(CircuitRejected, match="but the job says 4") as caught:
        load_circuit(dataclasses.replace(circuit, num_qubits=4))
    assert caught.value.field == "circuit"


def test_load_circuit_revalidates_the_payload() -> None:
    payload = qasm2_program("h q[0];")
    digest = hashlib.sha256(payload).hexdigest()
    circuit = Circuit(format=QASM2, payload=payload, digest=digest, num_qubits=2, depth=1)
    with pytest.raises(CircuitRejected, match="no measurement") as caught:
        load_circuit(circuit)
    assert caught.value.field == "circuit"


# ------------------------------------------------------------------------------ OpenQASM 2


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("h q[0]\ncx q[0],q[1];", "OpenQASM 2 parse error at line 6, column 1: needed ';'"),
        ("foo q[0];", "'foo' is not defined"),
        ("h r[0];", "'r' is not defined"),
    ],
    ids=["syntax", "unknown-gate", "undeclared-register"],
)
def test_malformed_qasm2_is_rejected_with_its_position(body: str, expected: str) -> None:
    error = rejected(QASM2, qasm2_program(body))
    assert error.field == "circuit"
    assert expected in error.detail
    assert "Traceback" not in error.detail


def test_qasm2_include_cannot_read_local_files(tmp_path: Path) -> None:
    secret = tmp_path / "secret.inc"
    secret.write_text("hunter2;\n")
    error = rejected(QASM2, f'OPENQASM 2.0;\ninclude "{secret}";\nqreg q[1];'.encode())
    assert "unable to find" in error.detail
    assert "hunter2" not in error.detail


def test_opaque_gate_is_rejected() -> None:
    error = rejected(QASM2, qasm2_program("opaque magic a;\nmagic q[0];\nmeasure q -> c;"))
    assert "'magic' has no definition" in error.detail


def test_custom_gates_are_expanded_when_counting_depth() -> None:
    gates = "gate g0 a { h a; h a; }\n" + "".join(
        f"gate g{i + 1} a {{ g{i} a; g{i} a; }}\n" for i in range(20)
    )
    payload = qasm2_program(gates + "g20 q[0];\nmeasure q -> c;")
    error = rejected(QASM2, payload)
    assert "circuit depth is" in error.detail
    assert "at most 10000" in error.detail


def test_deeply_nested_gate_definitions_are_rejected() -> None:
    gates = "gate g0 a { h a; }\n" + "".join(f"gate g{i + 1} a {{ g{i} a; }}\n" for i in range(40))
    error = rejected(QASM2, qasm2_program(gates + "g40 q[0];\nmeasure q -> c;"))
    assert "nest more than" in error.detail


# ------------------------------------------------------------------------------ OpenQASM 3


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("h q[0]\ncx q[0], q[1];", "OpenQASM 3 parse error at line 6, column 1: unexpected 'cx'"),
        ("foo q[0];", "gate 'foo' is not defined"),
        ("h r[0];", "Undefined symbol 'r'"),
    ],
    ids=["syntax", "unknown-gate", "undeclared-register"],
)
def test_malformed_qasm3_is_rejected_with_its_position(body: str, expected: str) -> None:
    error = rejected(QASM3, qasm3_program(body))
    assert error.field == "circuit"
    assert expected in error.detail


def test_qasm3_for_loops_count_every_iteration() -> None:
    body = "for int i in [0:99999] { h q[0]; }\nc = measure q;"
    error = rejected(QASM3, qasm3_program(body))
    assert "circuit depth is 100001" in error.detail


def test_qasm3_short_for_loop_is_accepted_with_unrolled_depth() -> None:
    body = "for int i in [0:9] { h q[0]; }\nc = measure q;"
    assert validate_circuit(QASM3, qasm3_program(body), 10, LIMITS).depth == 11


def test_qasm3_while_loop_is_rejected() -> None:
    body = "c[0] = measure q[0];\nwhile (c[0]) { x q[0]; c[0] = measure q[0]; }"
    assert "while loops are not accepted" in rejected(QASM3, qasm3_program(body)).detail


def test_qasm3_unbound_input_is_rejected() -> None:
    body = "input float theta;\nrx(theta) q[0];\nc = measure q;"
    assert "unbound parameters (theta)" in rejected(QASM3, qasm3_program(body)).detail


# --------------------------------------------------------------------------------------- QPY


def test_garbage_qpy_is_rejected_without_internals() -> None:
    error = rejected(QPY, b"\x00\x01garbage" * 10)
    assert error.field == "circuit"
    assert "not a QPY file" in error.detail
    assert "qpy.dump" in error.detail


def test_truncated_qpy_is_rejected_without_a_backtrace() -> None:
    error = rejected(QPY, GHZ_PAYLOADS[QPY][:-20])
    assert "not a QPY file" in error.detail
    assert "\n" not in error.detail
    assert "Backtrace" not in error.detail


@pytest.mark.parametrize("count", [0, 2])
def test_qpy_must_hold_exactly_one_circuit(count: int) -> None:
    error = rejected(QPY, qpy_bytes(*[ghz()] * count))
    assert error.field == "circuit"
    assert f"holds {count} circuits; send exactly one" in error.detail


def test_qpy_too_many_qubits() -> None:
    error = rejected(QPY, qpy_bytes(ghz(80)))
    assert error.field == "circuit"
    assert "circuit has 80 qubits; this broker accepts at most 64" in error.detail


# ------------------------------------------------------------------------- shared checks


@pytest.mark.parametrize(
    ("fmt", "payload"),
    [
        (QASM2, qasm2_program("h q[0];")),
        (QASM3, qasm3_program("h q[0];")),
        (QPY, qpy_bytes(QuantumCircuit(2, 2))),
    ],
    ids=["qasm2", "qasm3", "qpy"],
)
def test_circuit_without_measurement_is_rejected(fmt: CircuitFormat, payload: bytes) -> None:
    error = rejected(fmt, payload)
    assert error.field == "circuit"
    assert "no measurement" in error.detail


def test_invalid_utf8_is_rejected() -> None:
    error = rejected(QASM3, b"OPENQASM 3.0;\n\xff\xfe qubit q;")
    assert error.field == "payload"
    assert "not valid UTF-8 (bad byte at offset 14)" in error.detail


def test_too_many_qubits_is_refused_from_the_declaration() -> None:
    error = rejected(QASM2, qasm2_program("measure q -> c;", qubits=80))
    assert error.detail == "circuit declares 80 qubits; this broker accepts at most 64"


@pytest.fixture
def parsers_must_not_run(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the parser ran")

    for module in (qasm2, qasm3):
        monkeypatch.setattr(module, "loads", refuse)
    monkeypatch.setattr(qpy, "load", refuse)


@pytest.mark.usefixtures("parsers_must_not_run")
@pytest.mark.parametrize(
    "payload",
    [b"OPENQASM 2.0; qreg q[4000000000];", b"OPENQASM 2.0; creg c[4000000000];"],
    ids=["qreg", "creg"],
)
def test_huge_declared_registers_never_reach_the_parser(payload: bytes) -> None:
    assert "declares 4000000000" in rejected(QASM2, payload).detail


@pytest.mark.usefixtures("parsers_must_not_run")
@pytest.mark.parametrize(
    ("program", "expected"),
    [
        ("bit[100000000] c;", "declares 100000000 classical bits"),
        ("h $100000000;", "declares 100000001 qubits"),
        ("qubit /* hidden */ [ 70 ] big;", "declares 70 qubits"),
        ("qubit[1000*1000] q;", "register sizes must be plain decimal numbers"),
        ("qubit[0x100000] q;", "not [0x100000]"),
        ("for int i in [0:1000000000*1000000000*100] { }", "range bounds must be plain decimal"),
        ("for int i in [0:10000000000000000000] { }", "range bounds must be plain decimal"),
    ],
    ids=["bits", "physical-qubit", "commented", "expression", "hex", "range-expr", "range-big"],
)
def test_qasm3_allocations_are_bounded_before_parsing(program: str, expected: str) -> None:
    """Each of these makes Qiskit allocate until memory runs out (or the process aborts)."""
    payload = f'OPENQASM 3.0;\ninclude "stdgates.inc";\n{program}'.encode()
    assert expected in rejected(QASM3, payload).detail


def test_qasm3_nested_loops_multiply() -> None:
    body = "for int i in [0:999] { for int j in [0:999] { h q[0]; } }\nc = measure q;"
    assert "circuit depth is 1000001;" in rejected(QASM3, qasm3_program(body)).detail


@pytest.mark.usefixtures("parsers_must_not_run")
@pytest.mark.parametrize("fmt", [QASM2, QASM3, QPY], ids=lambda f: f.value)
def test_oversized_payload_is_refused_before_parsing(fmt: CircuitFormat) -> None:
    error = rejected(fmt, b"\xff" * (256 * 1024 + 1))
    assert error.field == "payload"
    assert error.detail == "payload is 262145 bytes; this broker accepts at most 262144 bytes"


def test_empty_payload_is_rejected() -> None:
    assert rejected(QASM2, b"").field == "payload"


def test_too_deep() -> None:
    error = rejected(QASM2, GHZ_PAYLOADS[QASM2], limits=CircuitLimits(max_depth=5))
    assert error.detail == "circuit depth is 6; this broker accepts at most 5"


def test_too_deep_at_the_default_limit() -> None:
    payload = qasm2_program("h q[0];\n" * 10_000 + "measure q -> c;")
    assert "circuit depth is 10001; this broker accepts at most 10000" in (
        rejected(QASM2, payload).detail
    )


@pytest.mark.parametrize("shots", [0, -5, 100_001, 10**12])
def test_shots_out_of_range(shots: int) -> None:
    error = rejected(QASM2, GHZ_PAYLOADS[QASM2], shots=shots)
    assert error.field == "shots"
    assert error.detail == f"shots must be between 1 and 100000, got {shots}"


def test_shot_limits_are_inclusive() -> None:
    for shots in (1, 100_000):
        assert validate_circuit(QASM2, GHZ_PAYLOADS[QASM2], shots, LIMITS).num_qubits == 5


# ------------------------------------------------------------------------ isolated decoding


@pytest.fixture(scope="module")
def isolated() -> Iterator[IsolatedDecoder]:
    with IsolatedDecoder(memory_bytes=1 << 30) as decoder:
        yield decoder


def hostile_qpy(num_qubits: int) -> bytes:
    """The GHZ QPY with its header's qubit count (after name, phase type and size) replaced."""
    payload = qpy_bytes(ghz())
    header = struct.pack(">HcHII", 0, b"f", 8, 5, 5)[2:]  # name size differs; match the rest
    at = payload.index(header) + 3
    return payload[:at] + struct.pack(">I", num_qubits) + payload[at + 4 :]


@pytest.mark.parametrize("fmt", [QASM2, QASM3, QPY], ids=lambda f: f.value)
def test_isolated_decoder_agrees_with_in_process(
    isolated: IsolatedDecoder, fmt: CircuitFormat
) -> None:
    payload = GHZ_PAYLOADS[fmt]
    assert validate_circuit(fmt, payload, 10, LIMITS, decoder=isolated) == validate_circuit(
        fmt, payload, 10, LIMITS
    )


def test_isolated_decoder_passes_rejections_through(isolated: IsolatedDecoder) -> None:
    with pytest.raises(CircuitRejected, match="holds 2 circuits") as caught:
        validate_circuit(QPY, qpy_bytes(ghz(), ghz()), 10, LIMITS, decoder=isolated)
    assert caught.value.field == "circuit"


def test_hostile_qpy_header_is_contained(isolated: IsolatedDecoder) -> None:
    """Two billion declared qubits: in-process this allocates until the machine gives out."""
    with pytest.raises(CircuitRejected) as caught:
        validate_circuit(QPY, hostile_qpy(0x7FFF_FFFF), 10, LIMITS, decoder=isolated)
    assert caught.value.field in {"circuit", "payload"}
    assert validate_circuit(QPY, GHZ_PAYLOADS[QPY], 10, LIMITS, decoder=isolated).depth == 6


def test_crashing_payloads_are_rejected_and_the_child_replaced(isolated: IsolatedDecoder) -> None:
    """Some length fields make Qiskit's QPY reader abort the process outright."""
    good = GHZ_PAYLOADS[QPY]
    crashed = 0
    for offset in range(len(good) - 8):
        mutant = good[:offset] + struct.pack(">Q", 1 << 28) + good[offset + 8 :]
        try:
            validate_circuit(QPY, mutant, 10, LIMITS, decoder=isolated)
        except CircuitRejected as error:
            crashed += "crashed it" in error.detail
    assert crashed > 0, "no mutant crashed the decoder; Qiskit's QPY reader may be fixed"
    assert validate_circuit(QPY, good, 10, LIMITS, decoder=isolated).num_qubits == 5


def test_slow_payload_times_out_and_the_decoder_recovers() -> None:
    slow = qasm3_program("h q[0];\n" * 4000 + "c = measure q;")
    with IsolatedDecoder(timeout_s=0.01) as decoder:
        with pytest.raises(CircuitRejected, match=r"took longer than 0\.01 s") as caught:
            validate_circuit(QASM3, slow, 10, LIMITS, decoder=decoder)
        assert caught.value.field == "payload"
        assert validate_circuit(QASM2, GHZ_PAYLOADS[QASM2], 10, LIMITS, decoder=decoder)


_DECODES_ON_PASSING_THREADS = """
import asyncio
from broker.jobs.circuits import validate_circuit
from qtestbed.shared.circuits import CircuitFormat
SOURCE = b'OPENQASM 2.0;\\ninclude "qelib1.inc";\\nqreg q[3];\\ncreg c[3];\\n'
SOURCE += b'h q[0];\\nmeasure q -> c;\\n'
async def decode():
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, validate_circuit, CircuitFormat.OPENQASM2, SOURCE, 10)
for _ in range(5):  # each loop's executor threads end when it closes
    print(asyncio.run(decode()).num_qubits, flush=True)
"""


def test_decodes_on_threads_that_end_do_not_crash_the_process() -> None:
    """Qiskit's allocator keeps state on the thread that first loaded it: imported on an
    executor thread that then ended, the next thread's decode crashed the process (SIGSEGV,
    qiskit 2.6.2). A fresh process, so that nothing here has imported Qiskit first."""
    done = subprocess.run(
        [sys.executable, "-c", _DECODES_ON_PASSING_THREADS],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["3"] * 5
