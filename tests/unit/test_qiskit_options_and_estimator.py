"""Run options by Qiskit's names, and the Estimator's measurement bases, without a broker."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.quantum_info import Pauli, Statevector, random_unitary

from qtestbed.qiskit.estimator import _measured
from qtestbed.qiskit.options import (
    ACCEPTED,
    UnsupportedOptionError,
    check_option_names,
    default_options,
    resolve,
)


def test_defaults_are_qiskits_standard_names() -> None:
    assert set(ACCEPTED) >= {
        "shots",
        "memory",
        "meas_level",
        "meas_return",
        "init_qubits",
        "rep_delay",
        "seed_simulator",
    }
    chosen = resolve(default_options(), {})
    assert (chosen.shots, chosen.memory, chosen.project, chosen.priority) == (1024, False, "", None)
    chosen = resolve(default_options(), {"shots": 7, "memory": True, "priority": "HIGH"})
    assert (chosen.shots, chosen.memory, chosen.priority) == (7, True, "HIGH")
    assert resolve(default_options(), {"shots": None, "seed_simulator": None}).shots == 1024


def test_an_unknown_option_is_named_with_the_accepted_ones() -> None:
    with pytest.raises(UnsupportedOptionError) as refused:
        check_option_names({"shots": 1, "optimization_level": 3})
    message = str(refused.value)
    assert "'optimization_level'" in message
    assert all(name in message for name in ACCEPTED)


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("meas_level", 1, "classified bits only"),
        ("meas_level", True, "classified bits only"),
        ("seed_simulator", 0, "seed_simulator cannot be chosen"),
        ("init_qubits", False, "init_qubits must be True"),
        ("rep_delay", 0.0, "rep_delay cannot be chosen"),
        ("meas_return", "both", "meas_return must be one of"),
        ("shots", True, "shots must be a positive integer"),
        ("shots", -3, "shots must be a positive integer"),
        ("memory", 1, "memory must be True or False"),
        ("priority", "urgent", "priority must be one of"),
        ("project", 5, "project must be a string"),
    ],
)
def test_a_value_the_facility_cannot_honour_is_refused(
    name: str, value: object, words: str
) -> None:
    with pytest.raises(UnsupportedOptionError, match=words):
        resolve(default_options(), {name: value})


def rotated_state(seed: int) -> QuantumCircuit:
    circuit = QuantumCircuit(3)
    circuit.unitary(random_unitary(8, seed=seed), [0, 1, 2])
    return circuit


@pytest.mark.parametrize("native", [True, False])
def test_measurement_bases_give_the_exact_expectation_values(native: bool) -> None:
    gates = frozenset({"rz", "sx", "x", "cx"} if native else {"h", "sdg", "cx"})
    for seed, letters in itertools.product(range(3), itertools.product("IXYZ", repeat=3)):
        label = "".join(letters)
        if label == "III":
            continue
        state = rotated_state(seed)
        exact = Statevector(state).expectation_value(Pauli(label)).real
        measured, qubits = _measured(state, Pauli(label), gates)
        assert {op for op in measured.count_ops() if op not in {"unitary", "measure"}} <= gates
        without = measured.remove_final_measurements(inplace=False)
        probabilities = Statevector(without).probabilities(list(qubits))
        parity = np.array([(-1) ** bin(k).count("1") for k in range(len(probabilities))])
        assert abs(float(probabilities @ parity) - exact) < 1e-9, (label, seed)
