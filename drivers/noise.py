"""The physics of a simulated noisy device, from its description.

Every basis gate gets a depolarizing error of the described strength (by the gate's width) and,
when the device states T1 and T2, thermal relaxation of each qubit it acts on over the gate's
duration; measurement gets a symmetric readout flip. Phase gates (`rz`, `p`, `z`, `s`, `t`, ...)
are frame changes, as on most superconducting devices: they take no time and do not relax.

Aer's noise model attaches an error to an instruction by name, which cannot express a `delay`
whose length varies from one instruction to the next. `with_delay_relaxation` therefore gives
the simulator a copy of the circuit in which each delay is replaced by the thermal relaxation
of its qubit over that delay's length: the circuit that ran (and is reported) keeps its delays.
Idle qubits do not relax while other qubits' gates run (the circuit is not scheduled); a
researcher who wants that inserts delays, as characterisation experiments do.
"""

from __future__ import annotations

from qiskit import QuantumCircuit
from qiskit.circuit import Delay
from qiskit.circuit.library import get_standard_gate_name_mapping
from qiskit_aer.noise import (
    NoiseModel,
    QuantumError,
    ReadoutError,
    depolarizing_error,
    thermal_relaxation_error,
)

from drivers.device import DeviceDescription

FRAME_CHANGES = frozenset({"rz", "p", "u1", "z", "s", "sdg", "t", "tdg"})
_NOT_GATES = frozenset({"delay", "reset", "measure", "barrier"})
_NANOSECONDS = {"s": 1e9, "ms": 1e6, "us": 1e3, "ns": 1.0, "ps": 1e-3}


def build_noise_model(description: DeviceDescription) -> NoiseModel:
    """Depolarizing noise and relaxation per basis gate plus a symmetric readout error."""
    model = NoiseModel(basis_gates=list(description.basis_gates))
    standard = get_standard_gate_name_mapping()
    for gate in description.basis_gates:
        operation = standard[gate]
        width = operation.num_qubits
        if operation.num_clbits or gate in _NOT_GATES or width not in (1, 2):
            continue
        error = _gate_error(description, gate, width)
        if error is not None:
            model.add_all_qubit_quantum_error(error, [gate])
    flip = description.readout_error
    if flip:
        model.add_all_qubit_readout_error(ReadoutError([[1 - flip, flip], [flip, 1 - flip]]))
    return model


def _gate_error(description: DeviceDescription, gate: str, width: int) -> QuantumError | None:
    probability = description.one_qubit_error if width == 1 else description.two_qubit_error
    duration = description.one_qubit_gate_ns if width == 1 else description.two_qubit_gate_ns
    error = depolarizing_error(probability, width) if probability else None
    if gate in FRAME_CHANGES or not duration:
        return error
    relax = relaxation(description, duration)
    if relax is None:
        return error
    if width == 2:
        relax = relax.expand(relax)
    return relax if error is None else error.compose(relax)


def relaxation(description: DeviceDescription, nanoseconds: float) -> QuantumError | None:
    """One qubit's thermal relaxation over `nanoseconds`; None when the device states no T1."""
    if description.t1_us is None or description.t2_us is None:
        return None
    return thermal_relaxation_error(description.t1_us * 1e3, description.t2_us * 1e3, nanoseconds)


def delay_nanoseconds(delay: Delay) -> float:
    """A delay's length in nanoseconds; ValueError for `dt` units.

    A simulated device states no sample time, and a `dt` delay is also what Qiskit's QPY makes
    of *every* delay (it drops the unit: Qiskit issues #8293 and #10662), so a `dt` delay
    cannot be trusted to mean what the researcher wrote: refusing it beats running a delay of
    the wrong length.
    """
    unit = delay.unit
    if unit not in _NANOSECONDS:
        raise ValueError(
            f"delay in {unit!r} units: this device takes delays in s, ms, us, ns or ps. "
            "QPY turns every delay into 'dt' (Qiskit issue #10662): send circuits with "
            "delays as OpenQASM 3, which keeps their units"
        )
    return float(delay.duration) * _NANOSECONDS[unit]


def with_delay_relaxation(
    circuit: QuantumCircuit, description: DeviceDescription
) -> QuantumCircuit:
    """The circuit for the simulator: each delay replaced by its qubit's relaxation over it.

    Returns `circuit` itself when it has no delay or the device states no T1.
    """
    has_delay = any(item.operation.name == "delay" for item in circuit.data)
    if not has_delay or description.t1_us is None:
        return circuit
    out = circuit.copy_empty_like()
    for item in circuit.data:
        operation = item.operation
        if not isinstance(operation, Delay):
            out.append(item)
            continue
        error = relaxation(description, delay_nanoseconds(operation))
        for qubit in item.qubits:
            out.append(error, [qubit])
    return out
