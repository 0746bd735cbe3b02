"""One contract for every driver backend: counts that add up, keys without spaces, width checks."""

from __future__ import annotations

import dataclasses

import pytest
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister

from drivers.backends import Backend, make_backend
from drivers.device import DeviceDescription

SHOTS = 1000
GHZ_OUTCOMES = {"00000", "11111"}
LINE = tuple(edge for i in range(4) for edge in ((i, i + 1), (i + 1, i)))

DEVICES = {
    "aer": DeviceDescription(
        device_id="sim-aer",
        num_qubits=5,
        basis_gates=("cx", "rz", "sx", "x"),
        coupling_map=LINE,
        backend="aer",
    ),
    "aer_noisy": DeviceDescription(
        device_id="sim-noisy",
        num_qubits=5,
        basis_gates=("cx", "rz", "sx", "x"),
        coupling_map=LINE,
        backend="aer_noisy",
        one_qubit_error=0.001,
        two_qubit_error=0.01,
        readout_error=0.01,
    ),
    "basic": DeviceDescription(
        device_id="sim-basic",
        num_qubits=5,
        basis_gates=("cx", "rz", "sx", "x"),
        coupling_map=LINE,
        backend="basic",
    ),
}


@pytest.fixture(params=sorted(DEVICES))
def device(request: pytest.FixtureRequest) -> DeviceDescription:
    description: DeviceDescription = DEVICES[request.param]
    return description


@pytest.fixture
def device_backend(device: DeviceDescription) -> Backend:
    return make_backend(device)


def ghz(n: int = 5) -> QuantumCircuit:
    qc = QuantumCircuit(n, n)
    qc.h(0)
    for i in range(n - 1):
        qc.cx(i, i + 1)
    qc.measure(range(n), range(n))
    return qc


def test_backend_name_is_the_described_kind(
    device: DeviceDescription, device_backend: Backend
) -> None:
    assert device_backend.name == device.backend


def test_ghz_counts(device: DeviceDescription, device_backend: Backend) -> None:
    counts = device_backend.run(ghz(), SHOTS, seed=11)
    assert sum(counts.values()) == SHOTS
    assert all(len(key) == 5 and set(key) <= {"0", "1"} for key in counts)
    ghz_share = sum(counts.get(key, 0) for key in GHZ_OUTCOMES) / SHOTS
    if device.backend == "aer_noisy":
        assert ghz_share > 0.8
    else:
        assert set(counts) == GHZ_OUTCOMES
        assert 400 < counts["00000"] < 600  # a fair coin, not a constant


def test_same_seed_same_counts(device_backend: Backend) -> None:
    assert device_backend.run(ghz(), 200, seed=5) == device_backend.run(ghz(), 200, seed=5)


def test_too_wide_circuit_is_rejected(device_backend: Backend) -> None:
    with pytest.raises(ValueError, match=r"circuit needs 6 qubits but the \w+ device has 5"):
        device_backend.run(ghz(6), SHOTS)


def test_zero_shots_is_rejected(device_backend: Backend) -> None:
    with pytest.raises(ValueError, match="shots"):
        device_backend.run(ghz(), 0)


def test_several_registers_give_keys_without_spaces(
    device: DeviceDescription, device_backend: Backend
) -> None:
    flags, pair = ClassicalRegister(1, "flags"), ClassicalRegister(2, "pair")
    qc = QuantumCircuit(QuantumRegister(3, "q"), flags, pair)
    qc.x(0)
    qc.measure(0, flags[0])
    qc.measure([1, 2], pair)
    counts = device_backend.run(qc, SHOTS, seed=3)
    assert sum(counts.values()) == SHOTS
    assert all(" " not in key and len(key) == 3 for key in counts)
    # Qiskit's order: last register leftmost, clbit 0 rightmost.
    if device.backend == "aer_noisy":
        assert max(counts, key=counts.__getitem__) == "001"
    else:
        assert counts == {"001": SHOTS}


def test_memory_is_one_outcome_per_shot_whose_histogram_is_the_counts(
    device_backend: Backend,
) -> None:
    flags, pair = ClassicalRegister(1, "flags"), ClassicalRegister(2, "pair")
    qc = QuantumCircuit(QuantumRegister(3, "q"), flags, pair)
    qc.h(0)
    qc.h(1)
    qc.cx(1, 2)
    qc.measure(0, flags[0])
    qc.measure([1, 2], pair)
    execution = device_backend.execute(device_backend.prepare(qc), 300, seed=9, memory=True)
    assert execution.memory is not None
    assert len(execution.memory) == 300
    assert all(len(shot) == 3 and " " not in shot for shot in execution.memory)
    histogram: dict[str, int] = {}
    for shot in execution.memory:
        histogram[shot] = histogram.get(shot, 0) + 1
    assert histogram == execution.counts
    coins = [shot[-1] for shot in execution.memory]
    assert coins != sorted(coins)  # the shots in the order they ran, not grouped by outcome
    assert device_backend.execute(device_backend.prepare(qc), 10, memory=False).memory is None


def test_high_error_device_shows_other_outcomes() -> None:
    rough = dataclasses.replace(
        DEVICES["aer_noisy"], one_qubit_error=0.05, two_qubit_error=0.2, readout_error=0.1
    )
    counts = make_backend(rough).run(ghz(), SHOTS, seed=11)
    assert sum(counts.values()) == SHOTS
    others = SHOTS - sum(counts.get(key, 0) for key in GHZ_OUTCOMES)
    assert others > 0.2 * SHOTS


def test_control_flow_runs_or_is_refused_with_value_error(
    device: DeviceDescription, device_backend: Backend
) -> None:
    """Aer runs feed-forward; the basic simulator cannot, and must say so as a ValueError."""
    qc = QuantumCircuit(2, 2)
    qc.x(0)
    qc.measure(0, 0)
    with qc.if_test((qc.clbits[0], 1)):
        qc.x(1)
    qc.measure(1, 1)
    if device.backend == "basic":
        with pytest.raises(ValueError, match=r"cannot run this circuit: .*if_else"):
            device_backend.run(qc, 100)
    else:
        counts = device_backend.run(qc, SHOTS, seed=2)
        assert max(counts, key=counts.__getitem__) == "11"
        assert sum(counts.values()) == SHOTS


def test_custom_gate_borrowing_a_standard_name_runs_its_own_definition() -> None:
    """The ideal backend skips transpilation only for genuine standard gates."""
    from qiskit.circuit import Gate

    from drivers.backends import AerIdealBackend

    flip = QuantumCircuit(1, name="h")
    flip.x(0)
    impostor = Gate("h", 1, [])
    impostor.definition = flip
    circuit = QuantumCircuit(1, 1)
    circuit.append(impostor, [0])
    circuit.measure(0, 0)
    assert AerIdealBackend(1).run(circuit, 200, seed=7) == {"1": 200}
