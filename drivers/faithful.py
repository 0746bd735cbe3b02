"""The faithful-execution contract: what a device may do to a circuit before it runs it.

A circuit that is valid for the device's target (every instruction a standard one the device
runs natively, every two-qubit instruction on a coupled pair, in the coupling map's direction)
runs exactly as sent. Any other circuit is translated at Qiskit's optimisation level 0: layout,
routing and basis translation, nothing else, so gates the researcher placed on purpose (folded
gates of zero-noise extrapolation, repeated pairs of a benchmark) are never cancelled. A device
set to `execution = "exact"` translates nothing: it refuses the circuit, naming the first
instruction its target cannot run.

The circuit that ran is reported with the result and its digest signed in the receipt. When it
ran as sent, it *is* the submitted payload (its digest is the submitted digest) and no text is
reported. When it was translated, it is reported as OpenQASM 3 (`qiskit.qasm3.dumps`), which a
researcher can read and load back with `qiskit.qasm3.loads`; its digest is SHA-256 of that
UTF-8 text.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from qiskit import QuantumCircuit, qasm3
from qiskit.circuit import ControlFlowOp
from qiskit.circuit.library import get_standard_gate_name_mapping
from qiskit.qasm3 import QASM3ExporterError

# The largest executed circuit a result carries: well inside the link's frame and the API's
# message limits (16 and 4 MiB), and about eight times the largest circuit a broker accepts
# by default (256 KiB), which a level-0 translation stays within for all but pathological inputs.
MAX_EXECUTED_CIRCUIT_BYTES = 2 * 1024 * 1024
# Instructions every device runs that are not gates of its basis.
DIRECTIVES = frozenset({"barrier", "delay", "measure", "reset"})
_STANDARD = get_standard_gate_name_mapping()


class NotValidForTarget(ValueError):
    """A device in exact mode refused a circuit it would have had to translate."""


@dataclass(frozen=True, kw_only=True, slots=True)
class DeviceTarget:
    """What a circuit must satisfy to run as sent: at most `num_qubits` qubits, gates named in
    `basis` (besides the directives), two-qubit gates on `edges` (None: all pairs coupled)."""

    num_qubits: int
    basis: frozenset[str]
    edges: frozenset[tuple[int, int]] | None
    # The classical control flow (if_else, for_loop, switch_case, ...) the device runs natively;
    # the bodies must be valid for the target too.
    control_flow: frozenset[str] = frozenset()


@dataclass(frozen=True, kw_only=True, slots=True)
class Prepared:
    """The circuit a device will run, and whether it is the one sent, untouched."""

    circuit: QuantumCircuit
    as_sent: bool


def first_violation(circuit: QuantumCircuit, target: DeviceTarget) -> str | None:
    """A sentence naming the first instruction the target cannot run as sent; None when valid."""
    if circuit.num_qubits > target.num_qubits:
        return f"the circuit has {circuit.num_qubits} qubits, the device {target.num_qubits}"
    return _violation(circuit, target, list(range(circuit.num_qubits)))


def _violation(circuit: QuantumCircuit, target: DeviceTarget, wires: list[int]) -> str | None:
    """`first_violation` for a circuit whose qubit i is the device's qubit `wires[i]`."""
    for position, item in enumerate(circuit.data):
        operation = item.operation
        name = operation.name
        qubits = tuple(wires[circuit.find_bit(q).index] for q in item.qubits)
        where = f"instruction {position} ({name} on qubits {list(qubits)})"
        if name == "barrier":
            continue
        if isinstance(operation, ControlFlowOp):
            if name not in target.control_flow:
                return f"{where}: the device does not run this classical control flow"
            for block in operation.blocks:
                inner = _violation(block, target, [qubits[i] for i in range(block.num_qubits)])
                if inner is not None:
                    return f"in the body of {where}: {inner}"
            continue
        standard = _STANDARD.get(name)
        if standard is None or type(operation) is not type(standard):
            return f"{where} is not one of Qiskit's standard instructions"
        if name not in DIRECTIVES and name not in target.basis:
            return f"{where} is not in the device's basis gates {sorted(target.basis)}"
        if len(qubits) == 2 and target.edges is not None and qubits not in target.edges:
            return f"{where} acts on qubits the device does not couple in that direction"
        if len(qubits) > 2 and target.edges is not None:
            return f"{where} acts on {len(qubits)} qubits; the device couples only pairs"
    return None


def prepare(
    circuit: QuantumCircuit,
    target: DeviceTarget,
    *,
    exact: bool,
    translate: Callable[[QuantumCircuit], QuantumCircuit],
) -> Prepared:
    """The circuit as sent when it is valid for `target`; otherwise `translate(circuit)` (which
    must be an optimisation-level-0 transpile), or NotValidForTarget when `exact`."""
    problem = first_violation(circuit, target)
    if problem is None:
        return Prepared(circuit=circuit, as_sent=True)
    if exact:
        raise NotValidForTarget(
            f"this device runs circuits exactly as sent and refuses this one: {problem}. "
            "Transpile it for the device's target (qubits, basis gates, coupling map) first"
        )
    return Prepared(circuit=translate(circuit), as_sent=False)


def executed_circuit_text(prepared: Prepared, limit: int = MAX_EXECUTED_CIRCUIT_BYTES) -> bytes:
    """What the result reports as the executed circuit: nothing when it ran as sent (it is the
    submitted payload), else its OpenQASM 3 text; ValueError when that is over `limit` bytes
    (the device does not run what it could not report)."""
    if prepared.as_sent:
        return b""
    try:
        text: str = qasm3.dumps(prepared.circuit)
    except QASM3ExporterError as exc:
        # A run that cannot be reported is not run: the receipt must name what ran.
        raise ValueError(f"the translated circuit cannot be written as OpenQASM 3: {exc}") from None
    encoded = text.encode("utf-8")
    if len(encoded) > limit:
        raise ValueError(
            f"the translated circuit is {len(encoded)} bytes of OpenQASM 3, over the {limit} "
            "a result may carry: transpile the circuit for the device's target and send that"
        )
    return encoded


def executed_circuit_digest(text: bytes, submitted_digest: str) -> str:
    """SHA-256 hex of the executed circuit `text` (from `executed_circuit_text`): the submitted
    digest when it is empty, because the circuit ran as sent."""
    return hashlib.sha256(text).hexdigest() if text else submitted_digest


def directed_edges(edges: Iterable[tuple[int, int]]) -> frozenset[tuple[int, int]] | None:
    """The coupling map as a set of directed pairs; an empty map means all pairs are coupled."""
    pairs = frozenset((int(a), int(b)) for a, b in edges)
    return pairs or None
