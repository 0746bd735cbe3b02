"""The noisy simulated device behaves as its description says: gates cost what the noise model
predicts (nothing cancelled on the way), and a delay sweep recovers the configured T1.

Tolerances come from the shot count (binomial standard errors) and the fit's own covariance,
not from thresholds picked to pass.
"""

from __future__ import annotations

import dataclasses
import io
import math
import re

import numpy as np
import pytest
from qiskit import QuantumCircuit, qasm3, qpy
from qiskit_aer import AerSimulator
from scipy.optimize import curve_fit  # type: ignore[import-untyped]

from drivers.backends import AerNoisyBackend
from drivers.circuits import decode_circuit
from drivers.device import DeviceDescription
from drivers.noise import build_noise_model
from qtestbed.v1 import jobs_pb2

DEVICE = DeviceDescription(
    device_id="sim-physics",
    num_qubits=2,
    basis_gates=("cx", "rz", "sx", "x"),
    coupling_map=((0, 1), (1, 0)),
    backend="aer_noisy",
    one_qubit_error=0.001,
    two_qubit_error=0.01,
    readout_error=0.02,
    t1_us=50.0,
    t2_us=40.0,
    one_qubit_gate_ns=35.0,
    two_qubit_gate_ns=300.0,
)
SHOTS = 4000
SIGMAS = 4.0  # a true model fails this check with probability ~6e-5 per comparison


def cx_pairs(pairs: int, *, measured: bool = True) -> QuantumCircuit:
    qc = QuantumCircuit(2, 2)
    for _ in range(pairs):
        qc.cx(0, 1)
        qc.cx(0, 1)
    if measured:
        qc.measure([0, 1], [0, 1])
    return qc


def predicted_p00(pairs: int) -> float:
    """P(read 00) from the noise model itself: the exact noisy state from Aer's density-matrix
    method, then the symmetric readout flip applied by hand."""
    qc = cx_pairs(pairs, measured=False)
    qc.save_probabilities()
    simulator = AerSimulator(method="density_matrix", noise_model=build_noise_model(DEVICE))
    probabilities = simulator.run(qc).result().data(0)["probabilities"]
    r = DEVICE.readout_error or 0.0
    stay = {0: (1 - r) ** 2, 1: r * (1 - r), 2: r * (1 - r), 3: r**2}
    return float(sum(float(probabilities[k]) * stay[k] for k in range(4)))


def test_cx_pairs_degrade_the_outcome_as_the_noise_model_predicts() -> None:
    backend = AerNoisyBackend(DEVICE)
    observed, expected, sigma = {}, {}, {}
    for pairs in (0, 10, 30):
        circuit = cx_pairs(pairs)
        prepared = backend.prepare(circuit)
        assert prepared.as_sent  # ISA: run exactly as sent
        assert prepared.circuit is circuit
        counts = backend.execute(prepared, SHOTS, seed=100 + pairs).counts
        observed[pairs] = counts.get("00", 0) / SHOTS
        expected[pairs] = predicted_p00(pairs)
        sigma[pairs] = math.sqrt(expected[pairs] * (1 - expected[pairs]) / SHOTS)
        assert abs(observed[pairs] - expected[pairs]) < SIGMAS * sigma[pairs], (pairs, observed)
    # The model's predictions are far apart compared with the sampling error, so had the pairs
    # been cancelled (as the default optimisation level did) the checks above would fail.
    for fewer, more in ((0, 10), (10, 30)):
        gap = expected[fewer] - expected[more]
        assert gap > 2 * SIGMAS * math.hypot(sigma[fewer], sigma[more]), (fewer, more, expected)
        assert observed[fewer] > observed[more]


def t1_sweep(delays_us: np.ndarray, shots: int) -> np.ndarray:
    backend = AerNoisyBackend(DEVICE)
    excited = []
    for i, delay in enumerate(delays_us):
        qc = QuantumCircuit(1, 1)
        qc.x(0)
        qc.barrier()
        qc.delay(float(delay), 0, unit="us")
        qc.barrier()
        qc.measure(0, 0)
        counts = backend.run(qc, shots, seed=7 + i)
        excited.append(counts.get("1", 0) / shots)
    return np.array(excited)


def test_a_delay_sweep_recovers_the_configured_t1_within_the_fit_error() -> None:
    shots = 2000
    delays = np.linspace(0.0, 250.0, 16)
    excited = t1_sweep(delays, shots)
    sigma = np.sqrt(np.clip(excited * (1 - excited), 1e-4, None) / shots)

    def decay(t: np.ndarray, amplitude: float, t1: float, offset: float) -> np.ndarray:
        return amplitude * np.exp(-t / t1) + offset

    params, covariance = curve_fit(
        decay, delays, excited, p0=(1.0, 30.0, 0.0), sigma=sigma, absolute_sigma=True
    )
    t1, t1_error = float(params[1]), float(np.sqrt(covariance[1, 1]))
    assert t1_error < 0.1 * (DEVICE.t1_us or 0)  # a fit informative enough to mean something
    assert abs(t1 - (DEVICE.t1_us or 0)) < 3 * t1_error, (t1, t1_error)


def test_without_relaxation_a_delay_changes_nothing() -> None:
    # Control for the T1 test: the decay comes from the delays, not from anything else.
    still = dataclasses.replace(DEVICE, t1_us=None, t2_us=None)
    qc = QuantumCircuit(1, 1)
    qc.x(0)
    qc.delay(500.0, 0, unit="us")
    qc.measure(0, 0)
    counts = AerNoisyBackend(still).run(qc, SHOTS, seed=5)
    decayed = AerNoisyBackend(DEVICE).run(qc, SHOTS, seed=5)
    assert counts.get("1", 0) / SHOTS > 0.95  # only readout and gate error
    assert decayed.get("1", 0) / SHOTS < 0.05  # 10 T1: relaxed to |0>, up to readout error


def test_a_delay_whose_unit_qpy_dropped_is_refused_not_misread() -> None:
    qc = QuantumCircuit(1, 1)
    qc.x(0)
    qc.delay(500, 0, unit="us")
    qc.measure(0, 0)
    buffer = io.BytesIO()
    qpy.dump(qc, buffer)
    decoded = decode_circuit(jobs_pb2.CIRCUIT_FORMAT_QPY, buffer.getvalue())
    with pytest.raises(ValueError, match="delay in 'dt' units") as refused:
        AerNoisyBackend(DEVICE).run(decoded, 10)
    assert "send circuits with delays as OpenQASM 3" in str(refused.value)
    kept = decode_circuit(jobs_pb2.CIRCUIT_FORMAT_OPENQASM3, qasm3.dumps(qc).encode())
    assert AerNoisyBackend(DEVICE).run(kept, 200, seed=1).get("1", 0) < 20  # 10 T1: decayed


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"t1_us": 50.0, "t2_us": None}, "t1_us and t2_us must be given together"),
        ({"t2_us": 101.0}, "must not exceed 2 * t1_us"),
        ({"t1_us": 0.0}, "t1_us must be a finite number > 0"),
        ({"two_qubit_gate_ns": -1.0}, "two_qubit_gate_ns must be a finite number >= 0"),
    ],
)
def test_impossible_physics_is_refused_by_name(changes: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        DeviceDescription.from_dict({**DEVICE.as_dict(), **changes})


def test_a_hahn_echo_sweep_recovers_the_configured_t2_within_the_fit_error() -> None:
    # sx, delay t/2, x, delay t/2, sx: the echo leaves P(0) = (1 + exp(-t/T2)) / 2 whatever
    # T1 does to the populations, up to gate and readout error (the fit's amplitude and offset).
    backend = AerNoisyBackend(DEVICE)
    shots = 2000
    delays = np.linspace(0.0, 200.0, 16)
    ground = []
    for i, delay in enumerate(delays):
        qc = QuantumCircuit(1, 1)
        qc.sx(0)
        qc.delay(float(delay) / 2, 0, unit="us")
        qc.x(0)
        qc.delay(float(delay) / 2, 0, unit="us")
        qc.sx(0)
        qc.measure(0, 0)
        ground.append(backend.run(qc, shots, seed=300 + i).get("0", 0) / shots)
    p0 = np.array(ground)
    sigma = np.sqrt(np.clip(p0 * (1 - p0), 1e-4, None) / shots)

    def decay(t: np.ndarray, amplitude: float, t2: float, offset: float) -> np.ndarray:
        return amplitude * np.exp(-t / t2) + offset

    params, covariance = curve_fit(
        decay, delays, p0, p0=(0.5, 30.0, 0.5), sigma=sigma, absolute_sigma=True
    )
    t2, t2_error = float(params[1]), float(np.sqrt(covariance[1, 1]))
    assert t2_error < 0.1 * (DEVICE.t2_us or 0)
    assert abs(t2 - (DEVICE.t2_us or 0)) < 3 * t2_error, (t2, t2_error)
