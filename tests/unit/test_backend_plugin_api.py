"""The backend plugin API: discovery by entry point, version and settings refusals, the shipped
simulators as plugins, and the Qiskit adapter reading a device model's calibration (and seeing a
new one when its snapshot file changes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from qiskit import QuantumCircuit

from drivers.plugins.api import RunOptions
from drivers.plugins.registry import PluginError, installed_backends, load_backend

MANILA = {"model": "FakeManilaV2"}


def test_shipped_and_third_party_plugins_are_found_by_entry_point() -> None:
    names = set(installed_backends())
    assert {"aer", "aer_noisy", "basic", "qiskit", "qiskit_fake", "fixture_logic"} <= names


def test_a_plugin_for_another_api_version_is_refused_naming_both_versions() -> None:
    with pytest.raises(PluginError, match=r"API version 0, but this driver speaks version 1"):
        load_backend("fixture_old_api", {"device_id": "x"}, {})


def test_a_simulator_is_the_device_table_and_takes_no_settings() -> None:
    table = {"device_id": "s", "num_qubits": 2, "basis_gates": ["cx"], "coupling_map": []}
    plugin = load_backend("aer", table, {})
    assert plugin.describe().num_qubits == 2
    assert plugin.describe().backend == "aer"
    with pytest.raises(PluginError, match=r"takes no \[backend_settings\]"):
        load_backend("aer", table, {"shots": 3})


def test_a_device_model_describes_its_calibration_and_runs_with_its_noise() -> None:
    plugin = load_backend("qiskit_fake", {"device_id": "manila"}, MANILA)
    description = plugin.describe()
    assert description.num_qubits == 5
    assert description.backend == "qiskit_fake"
    assert (0, 1) in description.coupling_map
    assert description.two_qubit_error is not None
    assert 1e-3 < description.two_qubit_error < 5e-2
    assert description.calibration_snapshot is not None
    circuit = QuantumCircuit(2, 2)
    circuit.x(0)
    circuit.measure([0, 1], [0, 1])
    prepared = plugin.prepare(circuit)
    run = plugin.run(prepared, 200, memory=True, options=RunOptions(seed=5))
    assert run.memory is not None
    assert len(run.memory) == 200
    assert max(run.counts, key=run.counts.__getitem__) == "01"
    assert len(run.counts) > 1  # readout noise from the snapshot flips some shots


def test_a_changed_snapshot_file_is_a_new_calibration(tmp_path: Path) -> None:
    from qiskit_ibm_runtime.fake_provider import FakeManilaV2

    shipped = Path(FakeManilaV2().dirname) / FakeManilaV2.props_filename
    snapshot = tmp_path / "props.json"
    snapshot.write_text(shipped.read_text())
    settings = {**MANILA, "snapshot_file": str(snapshot)}
    plugin = load_backend("qiskit_fake", {"device_id": "manila"}, settings)
    before = plugin.describe()
    assert plugin.describe() == before  # unchanged file: same description
    props = json.loads(snapshot.read_text())
    for gate in props["gates"]:
        for parameter in gate["parameters"]:
            if gate["gate"] == "cx" and parameter["name"] == "gate_error":
                parameter["value"] = 1e-3
    snapshot.write_text(json.dumps(props))
    after = plugin.describe()
    assert after.two_qubit_error == pytest.approx(1e-3)
    assert after.calibration_digest() != before.calibration_digest()


def test_a_pair_reported_with_error_one_is_not_offered(tmp_path: Path) -> None:
    from qiskit_ibm_runtime.fake_provider import FakeManilaV2

    shipped = Path(FakeManilaV2().dirname) / FakeManilaV2.props_filename
    props = json.loads(shipped.read_text())
    for gate in props["gates"]:
        if gate["gate"] == "cx" and gate["qubits"] == [0, 1]:
            for parameter in gate["parameters"]:
                if parameter["name"] == "gate_error":
                    parameter["value"] = 1.0
    snapshot = tmp_path / "props.json"
    snapshot.write_text(json.dumps(props))
    settings = {**MANILA, "snapshot_file": str(snapshot)}
    description = load_backend("qiskit_fake", {"device_id": "m"}, settings).describe()
    assert (0, 1) not in description.coupling_map
    assert (1, 0) in description.coupling_map


def test_device_models_refuse_unknown_settings_and_models() -> None:
    with pytest.raises(PluginError, match="unknown setting 'shots'"):
        load_backend("qiskit_fake", {"device_id": "m"}, {**MANILA, "shots": 1})
    with pytest.raises(PluginError, match="not a qiskit_ibm_runtime fake backend"):
        load_backend("qiskit_fake", {"device_id": "m"}, {"model": "FakeNowhere"})
    with pytest.raises(PluginError, match="read from the backend itself"):
        load_backend("qiskit_fake", {"device_id": "m", "num_qubits": 3}, MANILA)
