"""A circuit as the broker takes it: OpenQASM 2 when that keeps it exact, else QPY.

OpenQASM 2 is validated in the broker's own process and is readable in audits; QPY carries what
OpenQASM 2 cannot (some instructions, bits outside registers). Circuits with classical
feed-forward (control flow) or delays in time units travel as OpenQASM 3: OpenQASM 2 has neither
(its `delay(2e-07)` loses the unit), and Qiskit's QPY (2.x) reads every delay back in `dt`, so
200 ns would run as 200 samples of an unknown length. The driver returns
counts keyed by classical bit order (clbit 0 rightmost), so OpenQASM 2 is used only when its
register declarations reproduce the circuit's qubit and clbit order exactly.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass

from qiskit import QuantumCircuit, qasm2, qasm3, qpy
from qiskit.circuit import ControlFlowOp
from qiskit.exceptions import QiskitError

from qtestbed.shared.wire import FORMAT_NAMES, format_to_proto
from qtestbed.v1 import jobs_pb2


@dataclass(frozen=True, slots=True)
class EncodedCircuit:
    payload: bytes
    fmt: str  # "qasm2" | "qasm3" | "qpy", as `Client.submit` names them

    @property
    def digest(self) -> str:
        """SHA-256 hex of the payload: the circuit digest the receipt must name."""
        return hashlib.sha256(self.payload).hexdigest()

    def message(self) -> jobs_pb2.Circuit:
        return jobs_pb2.Circuit(
            format=format_to_proto(FORMAT_NAMES[self.fmt]), payload=self.payload
        )


def check_submittable(circuit: QuantumCircuit) -> None:
    """ValueError naming what stops the broker from running `circuit` or the provider from
    reading its counts back."""
    if not isinstance(circuit, QuantumCircuit):
        raise TypeError(f"expected a QuantumCircuit, got {type(circuit).__name__}")
    if circuit.parameters:
        names = ", ".join(sorted(p.name for p in circuit.parameters))
        raise ValueError(
            f"circuit {circuit.name!r} has unbound parameters ({names}); bind them first "
            "(assign_parameters) or use the Sampler with parameter values"
        )
    if circuit.num_clbits == 0:
        raise ValueError(f"circuit {circuit.name!r} measures nothing, so it would return no counts")
    if not _in_register_order(circuit.clbits, circuit.cregs):
        raise ValueError(
            f"circuit {circuit.name!r} has classical bits outside its registers or shared between "
            "registers; the device reports counts per register, so give every classical bit "
            "exactly one ClassicalRegister"
        )


def encode_circuit(circuit: QuantumCircuit) -> EncodedCircuit:
    check_submittable(circuit)
    if _needs_openqasm3(circuit):
        return _openqasm3(circuit)
    if _in_register_order(circuit.qubits, circuit.qregs):
        try:
            return EncodedCircuit(qasm2.dumps(circuit).encode(), "qasm2")
        except QiskitError:
            pass  # something OpenQASM 2 cannot express: fall back to QPY
    buffer = io.BytesIO()
    qpy.dump(circuit, buffer)
    return EncodedCircuit(buffer.getvalue(), "qpy")


def _needs_openqasm3(circuit: QuantumCircuit) -> bool:
    """Control flow, or a delay in time units, anywhere in the circuit."""
    for item in circuit.data:
        operation = item.operation
        if isinstance(operation, ControlFlowOp):
            return True
        if operation.name == "delay" and getattr(operation, "unit", "dt") != "dt":
            return True
    return False


def _openqasm3(circuit: QuantumCircuit) -> EncodedCircuit:
    if circuit.layout is None and not _in_register_order(circuit.qubits, circuit.qregs):
        raise ValueError(
            f"circuit {circuit.name!r} has feed-forward or timed delays, which travel as "
            "OpenQASM 3, and qubits outside its registers; transpile it for the backend first"
        )
    try:
        text = qasm3.dumps(circuit)
    except QiskitError as exc:
        raise ValueError(
            f"circuit {circuit.name!r} has feed-forward or timed delays, which travel as "
            f"OpenQASM 3, and OpenQASM 3 cannot express it: {exc}"
        ) from None
    return EncodedCircuit(text.encode(), "qasm3")


def _in_register_order(bits: Sequence[object], registers: Sequence[Sequence[object]]) -> bool:
    """Every bit in exactly one register, and the registers in declaration order give `bits`."""
    return [bit for register in registers for bit in register] == list(bits)
