"""Simulator backends a driver runs circuits on, behind one small port.

Every backend follows the faithful-execution contract (`drivers.faithful`: a circuit valid for
the device runs as sent, any other is translated at optimisation level 0 or, in exact mode,
refused), returns counts keyed by bitstrings as Qiskit prints them (clbit 0 rightmost) with
the spaces Qiskit puts between classical registers removed, refuses circuits wider than the
device, and keeps Aer to one thread: the machine has two cores and shares them with the broker.
(Qiskit's own Rust passes size their thread pool from RAYON_NUM_THREADS, which the driver's
entry point should set; nothing here reads or writes the environment.)
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any, Protocol

from qiskit import QuantumCircuit, transpile
from qiskit.circuit import CONTROL_FLOW_OP_NAMES
from qiskit.circuit.library import get_standard_gate_name_mapping
from qiskit.providers.basic_provider import BasicSimulator
from qiskit.transpiler import CouplingMap, TranspilerError
from qiskit_aer import AerSimulator

from drivers.device import DeviceDescription
from drivers.faithful import DeviceTarget, Prepared, directed_edges, prepare
from drivers.noise import build_noise_model, with_delay_relaxation
from drivers.plugins.api import Execution

_STANDARD = get_standard_gate_name_mapping()


class Backend(Protocol):
    """Runs one circuit under the faithful-execution contract (`drivers.faithful`)."""

    @property
    def name(self) -> str: ...

    def prepare(self, circuit: QuantumCircuit, seed: int | None = None) -> Prepared:
        """The circuit this backend would run for `circuit`: itself when valid for the target,
        else its level-0 translation; ValueError (NotValidForTarget in exact mode) if none."""
        ...

    def execute(
        self, prepared: Prepared, shots: int, seed: int | None = None, *, memory: bool = False
    ) -> Execution:
        """Counts of exactly `prepared.circuit`, keyed by bitstrings without spaces, with
        per-shot memory in shot order when `memory` is set."""
        ...

    def run(self, circuit: QuantumCircuit, shots: int, seed: int | None = None) -> dict[str, int]:
        """`execute(prepare(circuit))`; ValueError for a circuit it cannot run."""
        ...


class AerIdealBackend:
    """Noise-free Aer simulation of the circuit on any wiring; Aer picks the method
    (stabilizer for Clifford circuits)."""

    name = "aer"

    def __init__(self, num_qubits: int, *, exact: bool = False) -> None:
        self._simulator = AerSimulator(max_parallel_threads=1)
        names = frozenset(self._simulator.target.operation_names)
        self._target = DeviceTarget(
            num_qubits=num_qubits,
            basis=names & frozenset(_STANDARD),
            edges=None,
            control_flow=names & CONTROL_FLOW_OP_NAMES,
        )
        self._exact = exact

    def prepare(self, circuit: QuantumCircuit, seed: int | None = None) -> Prepared:
        # Running natively also skips the transpiler, which costs ~80 ms even for a 5-qubit
        # circuit (the simulation itself takes ~2 ms).
        return prepare_circuit(self.name, circuit, self._target, self._exact, self._simulator, seed)

    def execute(
        self, prepared: Prepared, shots: int, seed: int | None = None, *, memory: bool = False
    ) -> Execution:
        _check_shots(prepared.circuit, shots)
        job = self._simulator.run(prepared.circuit, shots=shots, seed_simulator=seed, memory=memory)
        return execution_of(job.result(), memory)

    def run(self, circuit: QuantumCircuit, shots: int, seed: int | None = None) -> dict[str, int]:
        _check_shots(circuit, shots)
        return self.execute(self.prepare(circuit, seed), shots, seed).counts


class AerNoisyBackend:
    """Aer with the device's physics (`drivers.noise`) on the device's gates and wiring."""

    name = "aer_noisy"

    def __init__(self, description: DeviceDescription) -> None:
        self._description = description
        self._coupling = (
            CouplingMap([list(edge) for edge in description.coupling_map])
            if description.coupling_map
            else None
        )
        self._target = DeviceTarget(
            num_qubits=description.num_qubits,
            basis=frozenset(description.basis_gates),
            edges=directed_edges(description.coupling_map),
        )
        self._simulator = AerSimulator(
            noise_model=build_noise_model(description), max_parallel_threads=1
        )

    def prepare(self, circuit: QuantumCircuit, seed: int | None = None) -> Prepared:
        return prepare_circuit(
            self.name,
            circuit,
            self._target,
            self._description.execution == "exact",
            None,
            seed,
            basis_gates=list(self._description.basis_gates),
            coupling_map=self._coupling,
        )

    def execute(
        self, prepared: Prepared, shots: int, seed: int | None = None, *, memory: bool = False
    ) -> Execution:
        _check_shots(prepared.circuit, shots)
        simulated = with_delay_relaxation(prepared.circuit, self._description)
        job = self._simulator.run(simulated, shots=shots, seed_simulator=seed, memory=memory)
        return execution_of(job.result(), memory)

    def run(self, circuit: QuantumCircuit, shots: int, seed: int | None = None) -> dict[str, int]:
        _check_shots(circuit, shots)
        return self.execute(self.prepare(circuit, seed), shots, seed).counts


class BasicSimulatorBackend:
    """Qiskit's pure-Python reference simulator: slow, dependency-free, a second opinion."""

    name = "basic"

    def __init__(self, num_qubits: int, *, exact: bool = False) -> None:
        self._simulator = BasicSimulator()
        basis = frozenset(self._simulator.target.operation_names) & frozenset(_STANDARD)
        self._target = DeviceTarget(num_qubits=num_qubits, basis=basis, edges=None)
        self._exact = exact

    def prepare(self, circuit: QuantumCircuit, seed: int | None = None) -> Prepared:
        return prepare_circuit(self.name, circuit, self._target, self._exact, self._simulator, seed)

    def execute(
        self, prepared: Prepared, shots: int, seed: int | None = None, *, memory: bool = False
    ) -> Execution:
        _check_shots(prepared.circuit, shots)
        job = self._simulator.run(prepared.circuit, shots=shots, seed_simulator=seed, memory=memory)
        return execution_of(job.result(), memory)

    def run(self, circuit: QuantumCircuit, shots: int, seed: int | None = None) -> dict[str, int]:
        _check_shots(circuit, shots)
        return self.execute(self.prepare(circuit, seed), shots, seed).counts


def make_backend(description: DeviceDescription) -> Backend:
    """The backend a device description asks for."""
    exact = description.execution == "exact"
    if description.backend == "aer":
        return AerIdealBackend(description.num_qubits, exact=exact)
    if description.backend == "aer_noisy":
        return AerNoisyBackend(description)
    if description.backend == "basic":
        return BasicSimulatorBackend(description.num_qubits, exact=exact)
    raise ValueError(f"unknown backend {description.backend!r}")


def prepare_circuit(
    name: str,
    circuit: QuantumCircuit,
    target: DeviceTarget,
    exact: bool,
    backend: Any,
    seed: int | None,
    **options: Any,
) -> Prepared:
    """Width check, then the faithful contract; translation (`transpile` at level 0 with
    `backend` and `options`) inlines impostor gates first. Backend plugins use it too."""
    if circuit.num_qubits > target.num_qubits:
        raise ValueError(
            f"circuit needs {circuit.num_qubits} qubits but the {name} device has "
            f"{target.num_qubits}"
        )

    def translate(sent: QuantumCircuit) -> QuantumCircuit:
        args = (backend,) if backend is not None else ()
        return _compile(name, _inline_impostors(sent), *args, seed_transpiler=seed, **options)

    return prepare(circuit, target, exact=exact, translate=translate)


def _check_shots(circuit: QuantumCircuit, shots: int) -> None:
    if isinstance(shots, bool) or shots < 1:
        raise ValueError(f"shots must be a positive integer, got {shots!r}")
    if circuit.num_clbits == 0:
        raise ValueError("circuit has no classical bits, so it would return no counts")


def _compile(name: str, circuit: QuantumCircuit, *args: Any, **options: Any) -> QuantumCircuit:
    """Transpile at optimisation level 0 (layout, routing, basis translation: never an
    optimisation the researcher did not ask for), turning "this backend cannot express that"
    into ValueError."""
    try:
        compiled: QuantumCircuit = transpile(circuit, *args, optimization_level=0, **options)
    except TranspilerError as exc:
        raise ValueError(f"the {name} backend cannot run this circuit: {exc.message}") from None
    return compiled


def execution_of(result: Any, memory: bool) -> Execution:
    """The counts (and per-shot memory) of a Qiskit `Result` for one circuit."""
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
