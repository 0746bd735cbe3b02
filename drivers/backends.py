"""Simulator backends a driver runs circuits on, behind one small port.

Every backend returns counts keyed by bitstrings as Qiskit prints them (clbit 0 rightmost) with
the spaces Qiskit puts between classical registers removed, refuses circuits wider than the
device, and keeps Aer to one thread: the machine has two cores and shares them with the broker.
(Qiskit's own Rust passes size their thread pool from RAYON_NUM_THREADS, which the driver's
entry point should set; nothing here reads or writes the environment.)
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from qiskit import QuantumCircuit, transpile
from qiskit.circuit.library import get_standard_gate_name_mapping
from qiskit.providers.basic_provider import BasicSimulator
from qiskit.transpiler import CouplingMap, TranspilerError
from qiskit_aer import AerSimulator
from qiskit_aer.noise import NoiseModel, ReadoutError, depolarizing_error

from drivers.device import DeviceDescription


@dataclass(frozen=True, slots=True)
class Execution:
    """What one run produced: counts, and each shot's bitstring in shot order when asked for
    (same keys as the counts, whose histogram they are)."""

    counts: dict[str, int]
    memory: list[str] | None = None


class Backend(Protocol):
    """Runs one circuit and returns its counts."""

    @property
    def name(self) -> str: ...

    def run(self, circuit: QuantumCircuit, shots: int, seed: int | None = None) -> dict[str, int]:
        """Counts keyed by bitstrings without spaces; ValueError for a circuit it cannot run."""
        ...

    def execute(
        self, circuit: QuantumCircuit, shots: int, seed: int | None = None, *, memory: bool = False
    ) -> Execution:
        """Like `run`, with per-shot memory in shot order when `memory` is set."""
        ...


class AerIdealBackend:
    """Noise-free Aer simulation; Aer picks the method (stabilizer for Clifford circuits)."""

    name = "aer"

    def __init__(self, num_qubits: int) -> None:
        self._num_qubits = num_qubits
        self._simulator = AerSimulator(max_parallel_threads=1)
        self._native = frozenset(self._simulator.target.operation_names)

    def run(self, circuit: QuantumCircuit, shots: int, seed: int | None = None) -> dict[str, int]:
        return self.execute(circuit, shots, seed).counts

    def execute(
        self, circuit: QuantumCircuit, shots: int, seed: int | None = None, *, memory: bool = False
    ) -> Execution:
        circuit = _inline_impostors(circuit)
        _check_runnable(circuit, shots, self._num_qubits, self.name)
        # An ideal simulator has no wiring or basis to map onto: when it runs every instruction
        # natively, skip the transpiler, which costs ~80 ms even for a 5-qubit circuit (the
        # simulation itself takes ~2 ms).
        if _standard_only(circuit, self._native):
            compiled = circuit
        else:
            compiled = _compile(self.name, circuit, self._simulator, seed_transpiler=seed)
        job = self._simulator.run(compiled, shots=shots, seed_simulator=seed, memory=memory)
        return _execution(job.result(), memory)


class AerNoisyBackend:
    """Aer with a noise model built from the device's error figures, on the device's gates and
    wiring: depolarizing errors on every one- and two-qubit basis gate and a readout flip."""

    name = "aer_noisy"

    def __init__(self, description: DeviceDescription) -> None:
        self._description = description
        self._coupling = (
            CouplingMap([list(edge) for edge in description.coupling_map])
            if description.coupling_map
            else None
        )
        self._simulator = AerSimulator(
            noise_model=build_noise_model(description), max_parallel_threads=1
        )

    def run(self, circuit: QuantumCircuit, shots: int, seed: int | None = None) -> dict[str, int]:
        return self.execute(circuit, shots, seed).counts

    def execute(
        self, circuit: QuantumCircuit, shots: int, seed: int | None = None, *, memory: bool = False
    ) -> Execution:
        circuit = _inline_impostors(circuit)
        _check_runnable(circuit, shots, self._description.num_qubits, self.name)
        compiled = _compile(
            self.name,
            circuit,
            basis_gates=list(self._description.basis_gates),
            coupling_map=self._coupling,
            seed_transpiler=seed,
        )
        job = self._simulator.run(compiled, shots=shots, seed_simulator=seed, memory=memory)
        return _execution(job.result(), memory)


class BasicSimulatorBackend:
    """Qiskit's pure-Python reference simulator: slow, dependency-free, a second opinion."""

    name = "basic"

    def __init__(self, num_qubits: int) -> None:
        self._num_qubits = num_qubits
        self._simulator = BasicSimulator()

    def run(self, circuit: QuantumCircuit, shots: int, seed: int | None = None) -> dict[str, int]:
        return self.execute(circuit, shots, seed).counts

    def execute(
        self, circuit: QuantumCircuit, shots: int, seed: int | None = None, *, memory: bool = False
    ) -> Execution:
        circuit = _inline_impostors(circuit)
        _check_runnable(circuit, shots, self._num_qubits, self.name)
        compiled = _compile(self.name, circuit, self._simulator, seed_transpiler=seed)
        job = self._simulator.run(compiled, shots=shots, seed_simulator=seed, memory=memory)
        return _execution(job.result(), memory)


def make_backend(description: DeviceDescription) -> Backend:
    """The backend a device description asks for."""
    if description.backend == "aer":
        return AerIdealBackend(description.num_qubits)
    if description.backend == "aer_noisy":
        return AerNoisyBackend(description)
    if description.backend == "basic":
        return BasicSimulatorBackend(description.num_qubits)
    raise ValueError(f"unknown backend {description.backend!r}")


def build_noise_model(description: DeviceDescription) -> NoiseModel:
    """Depolarizing noise per basis gate (by its width) plus a symmetric readout error."""
    model = NoiseModel(basis_gates=list(description.basis_gates))
    standard = get_standard_gate_name_mapping()
    by_width = {1: description.one_qubit_error, 2: description.two_qubit_error}
    for width, probability in by_width.items():
        gates = [g for g in description.basis_gates if _is_gate(standard[g], width)]
        if probability and gates:
            model.add_all_qubit_quantum_error(depolarizing_error(probability, width), gates)
    flip = description.readout_error
    if flip:
        model.add_all_qubit_readout_error(ReadoutError([[1 - flip, flip], [flip, 1 - flip]]))
    return model


def _is_gate(operation: Any, width: int) -> bool:
    return bool(operation.num_qubits == width and operation.num_clbits == 0) and (
        operation.name not in {"delay", "reset", "measure", "barrier"}
    )


def _check_runnable(circuit: QuantumCircuit, shots: int, device_qubits: int, name: str) -> None:
    if circuit.num_qubits > device_qubits:
        raise ValueError(
            f"circuit needs {circuit.num_qubits} qubits but the {name} device has {device_qubits}"
        )
    if isinstance(shots, bool) or shots < 1:
        raise ValueError(f"shots must be a positive integer, got {shots!r}")
    if circuit.num_clbits == 0:
        raise ValueError("circuit has no classical bits, so it would return no counts")


def _compile(name: str, circuit: QuantumCircuit, *args: Any, **options: Any) -> QuantumCircuit:
    """Transpile, turning "this backend cannot express that" into ValueError."""
    try:
        compiled: QuantumCircuit = transpile(circuit, *args, **options)
    except TranspilerError as exc:
        raise ValueError(f"the {name} backend cannot run this circuit: {exc.message}") from None
    return compiled


def _execution(result: Any, memory: bool) -> Execution:
    counts = _counts(result)
    if not memory:
        return Execution(counts)
    shots = [str(bits).replace(" ", "") for bits in result.get_memory(0)]
    return Execution(counts, shots)


def _counts(result: Any) -> dict[str, int]:
    """Qiskit separates classical registers with spaces; drop them, keep Qiskit's bit order."""
    if not result.success:
        raise RuntimeError(f"simulation failed: {result.status}")
    raw: Mapping[str, Any] = result.get_counts(0)
    counts: dict[str, int] = {}
    for key, value in raw.items():
        bits = str(key).replace(" ", "")
        counts[bits] = counts.get(bits, 0) + int(value)
    return counts


_STANDARD = get_standard_gate_name_mapping()


def _standard_only(circuit: QuantumCircuit, native: frozenset[str]) -> bool:
    """Only Qiskit's own standard instructions (by class, not just by name: a custom gate that
    merely borrows a standard name must be compiled from its definition) that Aer runs."""
    for item in circuit.data:
        operation = item.operation
        name = operation.name
        if name == "barrier":
            continue
        standard = _STANDARD.get(name)
        if standard is None or type(operation) is not type(standard) or name not in native:
            return False
    return True


def _impostor(operation: Any) -> bool:
    standard = _STANDARD.get(operation.name)
    return standard is not None and type(operation) is not type(standard)


def _inline_impostors(circuit: QuantumCircuit) -> QuantumCircuit:
    """Replace custom gates that borrow a standard gate's name by their own definitions:
    simulators and the transpiler go by name and would otherwise run the standard gate."""
    if not any(_impostor(item.operation) for item in circuit.data):
        return circuit
    out = circuit.copy_empty_like()
    for item in circuit.data:
        operation = item.operation
        if not _impostor(operation):
            out.append(item)
            continue
        if operation.definition is None:
            raise ValueError(
                f"gate {operation.name!r} is not the standard gate and has no definition"
            )
        body = _inline_impostors(operation.definition)
        out.compose(body, qubits=list(item.qubits), clbits=list(item.clbits), inplace=True)
    return out


def flip_bits(counts: dict[str, int], probability: float, rng: random.Random) -> dict[str, int]:
    """Each measured bit of each shot flips with `probability` (simulated drift)."""
    drifted: dict[str, int] = {}
    for bits, count in counts.items():
        for _ in range(count):
            flipped = "".join(
                ("1" if b == "0" else "0") if rng.random() < probability else b for b in bits
            )
            drifted[flipped] = drifted.get(flipped, 0) + 1
    return drifted
