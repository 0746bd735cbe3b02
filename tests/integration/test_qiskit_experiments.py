"""qiskit-experiments, unmodified, through its documented default `exp.run(backend)` on a real
broker and real drivers: state tomography and randomized benchmarking on the devices, and a T1
measurement that must recover the relaxation time the facility configured for the noisy device.

`exp.run(backend)` deep-copies the experiment with its backend and runs through
qiskit-ibm-runtime's local mode, i.e. Qiskit's `BackendSamplerV2` with `memory=True` and
`meas_level=2`: exactly the conformance this checks. Shots and sequence lengths are small so the
module stays quick.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Iterator

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit_experiments.framework import ExperimentData
from qiskit_experiments.library import T1, StandardRB, StateTomography

from qtestbed.client import Profile
from qtestbed.qiskit import QtestbedBackend, QtestbedProvider
from qtestbed.testing import LocalFacility

pytestmark = [
    pytest.mark.timeout(600),
    # qiskit-experiments 0.14 builds qiskit-ibm-runtime's SamplerV2, which runtime >= 0.50
    # deprecates in favour of its executor sampler: their warning, not ours.
    pytest.mark.filterwarnings("ignore:The SamplerV2 class is deprecated:DeprecationWarning"),
]

NOISY = "sim-restricted"  # aer_noisy, restricted tier (bob)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFacility]:
    with LocalFacility(tmp_path_factory.mktemp("experiments") / "facility") as facility:
        facility.start_broker()
        facility.start_driver("sim-open")
        facility.start_driver(NOISY)
        operator = facility.client("olivia")
        facility.wait_available(operator, "sim-open")
        facility.wait_available(operator, NOISY)
        yield facility


def backend_for(lab: LocalFacility, name: str, device: str) -> Iterator[QtestbedBackend]:
    assert lab.addresses is not None
    loaded = Profile.load(lab.root / "users" / f"{name}.toml")
    with QtestbedProvider(dataclasses.replace(loaded, broker=lab.addresses.grpc)) as provider:
        yield provider.backend(device)


@pytest.fixture
def ideal(lab: LocalFacility) -> Iterator[QtestbedBackend]:
    yield from backend_for(lab, "alice", "sim-open")


@pytest.fixture
def noisy(lab: LocalFacility) -> Iterator[QtestbedBackend]:
    yield from backend_for(lab, "bob", NOISY)


def finished(data: ExperimentData) -> ExperimentData:
    data.block_for_results(timeout=400)
    assert data.status().name == "DONE", (data.status(), data.errors())
    assert not data.analysis_errors()
    return data


def test_state_tomography_of_a_bell_pair(ideal: QtestbedBackend) -> None:
    bell = QuantumCircuit(2)
    bell.h(0)
    bell.cx(0, 1)
    experiment = StateTomography(bell, physical_qubits=(1, 2))
    experiment.set_run_options(shots=300)
    data = finished(experiment.run(ideal))
    fidelity = data.analysis_results("state_fidelity", dataframe=True).iloc[0]
    assert fidelity.value > 0.9
    assert len(data.data()) == 9  # 3^2 measurement bases, each one broker job


def test_standard_rb_on_one_noisy_qubit(noisy: QtestbedBackend) -> None:
    # Sequences long enough for the decay to show (about 0.5 survival at 500 Cliffords) and
    # shots enough to fit it: with at most 60 Cliffords and 200 shots the curve stayed near 1,
    # the fit traded the decay against the SPAM terms, and one run in many fitted 0.024. Here
    # four runs fitted 1.0e-3 to 1.5e-3, each within +-1e-4.
    experiment = StandardRB((0,), lengths=[1, 100, 250, 500], num_samples=4, seed=13)
    experiment.set_run_options(shots=2000)
    data = finished(experiment.run(noisy))
    epc = data.analysis_results("EPC", dataframe=True).iloc[0]
    # One-qubit depolarizing error 0.001 per gate (readout error goes to the SPAM terms): an
    # error per Clifford of that order, and not zero (the noise model is applied).
    assert 0.0005 < epc.value.nominal_value < 0.005, epc.value


def configured_t1(lab: LocalFacility, device: str) -> float:
    """T1 in seconds of qubit 0, from the device description the facility wrote."""
    written = tomllib.loads((lab.root / "drivers" / f"{device}.toml").read_text())["device"]
    value = written.get("t1_us")
    assert value is not None, f"the {device} description configures no T1: {sorted(written)}"
    return float(value) * 1e-6


def test_t1_recovers_the_configured_relaxation_time(
    lab: LocalFacility, noisy: QtestbedBackend
) -> None:
    t1 = configured_t1(lab, NOISY)
    experiment = T1((0,), delays=np.linspace(0, 4 * t1, 12))
    experiment.set_run_options(shots=400)
    data = finished(experiment.run(noisy))
    fitted = data.analysis_results("T1", dataframe=True).iloc[0].value
    assert fitted.std_dev < 0.2 * t1, f"no usable fit: {fitted} for a configured T1 of {t1}"
    # Within the fit's own reported error (three standard deviations).
    assert abs(fitted.nominal_value - t1) <= 3 * fitted.std_dev, (fitted, t1)
