"""The driver's own decoding: the shared hardened codec, with refusals as ValueError."""

from __future__ import annotations

import ast
import io
import sys
from pathlib import Path

import pytest
from qiskit import QuantumCircuit, qasm2, qasm3, qpy

import qtestbed.shared.circuits
from drivers.circuits import decode_circuit
from qtestbed.shared.circuits import CircuitError
from qtestbed.v1 import jobs_pb2

QASM2 = jobs_pb2.CIRCUIT_FORMAT_OPENQASM2
QASM3 = jobs_pb2.CIRCUIT_FORMAT_OPENQASM3
QPY = jobs_pb2.CIRCUIT_FORMAT_QPY


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


GHZ_PAYLOADS: dict[int, bytes] = {
    QASM2: qasm2.dumps(ghz()).encode(),
    QASM3: qasm3.dumps(ghz()).encode(),
    QPY: qpy_bytes(ghz()),
}


def refused(fmt: int, payload: bytes) -> CircuitError:
    """The driver's refusal; the agent reports a ValueError as a permanent failure."""
    with pytest.raises(ValueError, match=r"^driver refused the circuit: ") as caught:
        decode_circuit(fmt, payload)
    assert isinstance(caught.value, CircuitError)
    return caught.value


@pytest.fixture
def parsers_must_not_run(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the parser ran")

    for module in (qasm2, qasm3):
        monkeypatch.setattr(module, "loads", refuse)
    monkeypatch.setattr(qpy, "load", refuse)


@pytest.mark.parametrize("fmt", [QASM2, QASM3, QPY], ids=["qasm2", "qasm3", "qpy"])
def test_ghz_is_decoded_in_every_format(fmt: int) -> None:
    circuit = decode_circuit(fmt, GHZ_PAYLOADS[fmt])
    assert (circuit.num_qubits, circuit.num_clbits, circuit.depth()) == (5, 5, 6)
    assert circuit.count_ops() == {"h": 1, "cx": 4, "measure": 5}


def test_include_cannot_read_local_files() -> None:
    payload = b'OPENQASM 2.0;\ninclude "/etc/passwd";\nqreg q[1];\ncreg c[1];\nmeasure q -> c;'
    error = refused(QASM2, payload)
    assert error.field == "circuit"
    assert "unable to find '/etc/passwd'" in error.args[0]
    assert "root" not in str(error)


@pytest.mark.usefixtures("parsers_must_not_run")
@pytest.mark.parametrize(
    ("fmt", "payload"),
    [
        (QASM2, b"OPENQASM 2.0; qreg q[4000000000];"),
        (QASM3, b'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[4000000000] q;'),
    ],
    ids=["qasm2", "qasm3"],
)
def test_oversized_register_never_reaches_the_parser(fmt: int, payload: bytes) -> None:
    error = refused(fmt, payload)
    assert error.field == "circuit"
    assert "circuit declares 4000000000 qubits; this broker accepts at most 64" in str(error)


def test_garbage_qpy_is_refused_without_internals() -> None:
    error = refused(QPY, b"\x00\x01garbage" * 10)
    assert "not a QPY file" in str(error)
    assert "\n" not in str(error)


def test_rust_panic_in_the_parser_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    class PanicException(BaseException):  # what pyo3 raises when Rust code panics
        pass

    def panic(*args: object, **kwargs: object) -> None:
        raise PanicException("index out of bounds")

    monkeypatch.setattr(qpy, "load", panic)
    error = refused(QPY, GHZ_PAYLOADS[QPY])
    assert "not a QPY file this broker can read (index out of bounds)" in str(error)


def test_qpy_must_hold_exactly_one_circuit() -> None:
    assert "holds 2 circuits" in str(refused(QPY, qpy_bytes(ghz(), ghz())))


def test_circuit_without_measurement_is_refused() -> None:
    payload = b'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\ncreg c[2];\nh q[0];'
    assert "no measurement" in str(refused(QASM2, payload))


def test_oversized_payload_is_refused() -> None:
    error = refused(QASM3, b"\xff" * (256 * 1024 + 1))
    assert error.field == "payload"


def test_unknown_format_is_refused() -> None:
    error = refused(jobs_pb2.CIRCUIT_FORMAT_UNSPECIFIED, GHZ_PAYLOADS[QASM2])
    assert error.field == "format"
    assert "unknown circuit format 0" in str(error)


def test_the_shared_codec_imports_only_the_standard_library_and_qiskit() -> None:
    """Both the broker and the drivers use it, so it may import nothing else of ours."""
    package = Path(qtestbed.shared.circuits.__file__).parent
    for module in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text(), str(module))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if node.level == 0 else ["<relative>"]
            else:
                continue
            for name in names:
                top = name.partition(".")[0]
                allowed = top in sys.stdlib_module_names or top == "qiskit"
                assert allowed or name.startswith("qtestbed.shared.circuits"), (module.name, name)
