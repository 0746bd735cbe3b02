"""A Qiskit `Target` from the broker's description of a device.

Basis gates map to Qiskit's standard gates by name; one-qubit gates and `measure` are offered on
every qubit, two-qubit gates on the directed coupling-map edges (an empty map means every pair is
wired), with the device's attested two-qubit error when it has one. Names Qiskit does not know are
left out, so the transpiler never emits an instruction the device did not declare.

Every device also runs `delay` and `reset` on each qubit (barriers are directives every target
accepts); the simulated Aer devices run mid-circuit measurement with classical feed-forward, so
their targets carry Qiskit's control-flow instructions (`if_else`, `while_loop`, `for_loop`,
`switch_case`: the dynamic circuits of OpenQASM 3).
"""

from __future__ import annotations

from itertools import permutations

from qiskit.circuit import ForLoopOp, IfElseOp, SwitchCaseOp, WhileLoopOp
from qiskit.circuit.library import get_standard_gate_name_mapping
from qiskit.transpiler import InstructionProperties, Target

from qtestbed.v1 import devices_pb2

# Device kinds (the broker's `Device.backend`) that run dynamic circuits.
FEED_FORWARD_KINDS = frozenset({"aer", "aer_noisy"})
_CONTROL_FLOW = {
    "if_else": IfElseOp,
    "while_loop": WhileLoopOp,
    "for_loop": ForLoopOp,
    "switch_case": SwitchCaseOp,
}


def coupling_edges(device: devices_pb2.Device) -> list[tuple[int, int]]:
    """Directed (control, target) pairs; all ordered pairs when the device lists none."""
    edges = [(edge.control, edge.target) for edge in device.coupling_map]
    return edges or list(permutations(range(device.num_qubits), 2))


def unknown_gates(device: devices_pb2.Device) -> list[str]:
    """Basis gate names that are not Qiskit standard gates (left out of the target)."""
    standard = get_standard_gate_name_mapping()
    return [name for name in device.basis_gates if name not in standard]


def build_target(device: devices_pb2.Device) -> Target:
    standard = get_standard_gate_name_mapping()
    qubits = range(device.num_qubits)
    error = device.two_qubit_error or None  # 0 means "not attested", not "perfect"
    target = Target(description=f"qtestbed device {device.device_id}", num_qubits=device.num_qubits)
    for name in dict.fromkeys([*device.basis_gates, "measure", "delay", "reset"]):
        operation = standard.get(name)
        if operation is None:
            continue
        width = operation.num_qubits
        if width == 1:
            target.add_instruction(operation, {(q,): None for q in qubits})
        elif width == 2:
            target.add_instruction(
                operation,
                {edge: InstructionProperties(error=error) for edge in coupling_edges(device)},
            )
        else:  # wider gates: the device declares no wiring for them, so offer them everywhere
            target.add_instruction(operation)
    if device.backend in FEED_FORWARD_KINDS:
        for name, kind in _CONTROL_FLOW.items():
            target.add_instruction(kind, name=name)
    return target
