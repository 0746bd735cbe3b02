"""Inspecting a parsed circuit: width, parameters, measurement, and a depth that hides nothing.

Depth counts `for` loops unrolled and user-defined gates expanded, so a short program cannot
hide a huge run; the walk is bounded in nesting and in instructions visited.
"""

from __future__ import annotations

import logging
from typing import Any

from qiskit import QuantumCircuit
from qiskit.circuit import ControlFlowOp, ForLoopOp, WhileLoopOp
from qiskit.circuit.library import get_standard_gate_name_mapping

from qtestbed.shared.circuits.model import (
    CircuitError,
    CircuitLimits,
    CircuitSummary,
    check_width,
    is_rust_panic,
)

log = logging.getLogger(__name__)

# Counted as one layer and never expanded: standard gates, plus library objects whose definition
# would be synthesized on demand (costly, and simulators run them natively).
_ONE_LAYER = frozenset(get_standard_gate_name_mapping()) | {
    "unitary",
    "initialize",
    "state_preparation",
    "isometry",
    "diagonal",
}


def summarize_circuit(qc: QuantumCircuit, limits: CircuitLimits) -> CircuitSummary:
    """Check a parsed circuit against the limits and return what the broker records about it."""
    try:
        return _summarize(qc, limits)
    except CircuitError:
        raise
    except Exception as exc:  # hostile structures can trip Qiskit itself (RecursionError, ...)
        raise _uninspectable(exc) from None
    except BaseException as exc:
        if not is_rust_panic(exc):
            raise
        raise _uninspectable(exc) from None


def _uninspectable(exc: BaseException) -> CircuitError:
    log.debug("circuit inspection failed", exc_info=exc)
    return CircuitError(
        "circuit", f"circuit could not be inspected ({type(exc).__name__}); simplify it"
    )


def _summarize(qc: QuantumCircuit, limits: CircuitLimits) -> CircuitSummary:
    check_width(qc.num_qubits, qc.num_clbits, limits, verb="has")
    if qc.num_parameters:
        names = ", ".join(sorted(p.name for p in qc.parameters)[:3])
        raise CircuitError(
            "circuit", f"circuit has unbound parameters ({names}); bind values before submitting"
        )
    if not _has_measurement(qc):
        raise CircuitError(
            "circuit",
            "circuit has no measurement, so a run would return no counts; "
            "add measure instructions for the qubits you want read out",
        )
    depth = _DepthCounter().depth(qc)
    if depth > limits.max_depth:
        raise CircuitError(
            "circuit", f"circuit depth is {depth}; this broker accepts at most {limits.max_depth}"
        )
    return CircuitSummary(num_qubits=qc.num_qubits, num_clbits=qc.num_clbits, depth=depth)


def _has_measurement(qc: QuantumCircuit) -> bool:
    for instruction in qc.data:
        operation = instruction.operation
        if operation.name == "measure":
            return True
        if isinstance(operation, ControlFlowOp) and any(map(_has_measurement, operation.blocks)):
            return True
    return False


_VISIT_BUDGET = 250_000  # instructions visited, loops and definitions included (about 0.3 s)
_MAX_NESTING = 32


class _DepthCounter:
    """Depth with `for` loops unrolled and user-defined gates expanded, so a short program cannot
    hide a huge run. Each loop body and each gate definition (by name) is walked once, and the
    walk is capped in nesting and in instructions visited, so hostile input costs bounded work."""

    def __init__(self) -> None:
        self._budget = _VISIT_BUDGET
        self._nesting = 0
        self._expanded: dict[tuple[str, int, int], int] = {}

    def depth(self, qc: QuantumCircuit) -> int:
        self._nesting += 1
        if self._nesting > _MAX_NESTING:
            raise CircuitError(
                "circuit", f"gate definitions or loops nest more than {_MAX_NESTING} levels deep"
            )
        levels: dict[object, int] = {}
        deepest = 0
        for instruction in qc.data:
            self._budget -= 1
            if self._budget < 0:
                raise CircuitError("circuit", "circuit is too large once its gates are expanded")
            wires = (*instruction.qubits, *instruction.clbits)
            weight = self._weight(instruction.operation)
            if weight == 0 or not wires:
                continue
            level = max(levels.get(wire, 0) for wire in wires) + weight
            levels.update(dict.fromkeys(wires, level))
            deepest = max(deepest, level)
        self._nesting -= 1
        return deepest

    def _weight(self, operation: Any) -> int:
        if getattr(operation, "_directive", False):
            return 0
        if isinstance(operation, WhileLoopOp):
            raise CircuitError(
                "circuit",
                "while loops are not accepted (their run time is unbounded); use a for loop",
            )
        if isinstance(operation, ForLoopOp):
            return _iterations(operation.params[0]) * self.depth(operation.blocks[0])
        if isinstance(operation, ControlFlowOp):
            return max((self.depth(block) for block in operation.blocks), default=0)
        if operation.name in _ONE_LAYER:
            return 1
        return self._expand(operation)

    def _expand(self, operation: Any) -> int:
        key = (str(operation.name), int(operation.num_qubits), int(operation.num_clbits))
        if key not in self._expanded:
            try:
                definition = operation.definition
            except Exception:
                log.debug("gate definition failed", exc_info=True)
                definition = None
            if definition is None:
                raise CircuitError(
                    "circuit",
                    f"gate {key[0]!r} has no definition (opaque); use gates this broker can run",
                )
            self._expanded[key] = max(self.depth(definition), 1)
        return self._expanded[key]


def _iterations(indexset: Any) -> int:
    try:
        return len(indexset)
    except OverflowError:  # range(0, 10**30) has no len()
        return 2**63
