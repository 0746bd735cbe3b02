"""Device descriptions: validation that names the field, a TOML round trip, a stable digest."""

from __future__ import annotations

import dataclasses
import tomllib
from typing import Any

import pytest

from drivers.backends import (
    AerIdealBackend,
    AerNoisyBackend,
    BasicSimulatorBackend,
    make_backend,
)
from drivers.device import DeviceDescription
from drivers.noise import build_noise_model

NOISY = DeviceDescription(
    device_id="sim-noisy",
    num_qubits=3,
    basis_gates=("rz", "sx", "x", "cx"),
    coupling_map=((0, 1), (1, 2)),
    backend="aer_noisy",
    one_qubit_error=0.001,
    two_qubit_error=0.01,
    readout_error=0.02,
)

# SHA-256 of the canonical JSON of NOISY's calibration fields. A change here changes what every
# attested device reports, so reference values must be updated with it.
PINNED_DIGEST = "c28dee8f1eb2db9ae2a64b9bd8072661c977db193e12a4c5988b3f0d01814ce5"

TOML = """
device_id = "sim-noisy"
num_qubits = 3
basis_gates = ["rz", "sx", "x", "cx"]
coupling_map = [[0, 1], [1, 2]]
backend = "aer_noisy"
one_qubit_error = 0.001
two_qubit_error = 0.01
readout_error = 0.02
"""


def noisy_dict(**changes: Any) -> dict[str, Any]:
    data = NOISY.as_dict()
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def test_toml_table_round_trips() -> None:
    description = DeviceDescription.from_dict(tomllib.loads(TOML))
    assert description == NOISY
    assert DeviceDescription.from_dict(description.as_dict()) == description


def test_as_dict_leaves_out_absent_error_figures() -> None:
    ideal = DeviceDescription(
        device_id="sim", num_qubits=2, basis_gates=(), coupling_map=(), backend="aer"
    )
    assert ideal.as_dict() == {
        "device_id": "sim",
        "num_qubits": 2,
        "basis_gates": [],
        "coupling_map": [],
        "backend": "aer",
    }


def test_integer_error_figures_are_accepted_as_floats() -> None:
    description = DeviceDescription.from_dict(noisy_dict(readout_error=0))
    assert description.readout_error == 0.0
    assert isinstance(description.readout_error, float)


@pytest.mark.parametrize(
    ("changes", "field", "fragment"),
    [
        ({"backend": "IBM Real!"}, "backend", "must name a backend plugin"),
        ({"num_qubits": 0}, "num_qubits", "positive integer"),
        ({"num_qubits": True}, "num_qubits", "int"),
        ({"num_qubits": "3"}, "num_qubits", "int"),
        ({"device_id": ""}, "device_id", "non-empty"),
        ({"coupling_map": [[0, 3]]}, "coupling_map", "(0, 3)"),
        ({"coupling_map": [[1, 1]]}, "coupling_map", "two different qubits"),
        ({"coupling_map": [[0, 1], [0, 1]]}, "coupling_map", "twice"),
        ({"coupling_map": [[0, 1, 2]]}, "coupling_map", "pairs"),
        ({"coupling_map": [["0", 1]]}, "coupling_map", "int"),
        ({"basis_gates": ["rz", "magic"]}, "basis_gates", "'magic'"),
        ({"basis_gates": "rz"}, "basis_gates", "list"),
        ({"basis_gates": []}, "basis_gates", "must not be empty"),
        ({"two_qubit_error": 1.0}, "two_qubit_error", "[0, 1)"),
        ({"one_qubit_error": -0.1}, "one_qubit_error", "[0, 1)"),
        ({"readout_error": float("nan")}, "readout_error", "[0, 1)"),
        ({"readout_error": "0.1"}, "readout_error", "number"),
        ({"readout_error": None}, "readout_error", "required for the aer_noisy backend"),
        ({"color": "blue"}, "color", "unknown field"),
    ],
)
def test_invalid_descriptions_name_the_field(
    changes: dict[str, Any], field: str, fragment: str
) -> None:
    with pytest.raises(ValueError, match=field) as caught:
        DeviceDescription.from_dict(noisy_dict(**changes))
    assert fragment in str(caught.value)


def test_missing_required_field_is_named() -> None:
    data = noisy_dict()
    del data["coupling_map"]
    with pytest.raises(ValueError, match="coupling_map is required"):
        DeviceDescription.from_dict(data)


def test_direct_construction_is_validated_too() -> None:
    with pytest.raises(ValueError, match="readout_error"):
        dataclasses.replace(NOISY, readout_error=1.5)


def test_calibration_digest_is_stable() -> None:
    twin = DeviceDescription.from_dict(tomllib.loads(TOML))
    assert NOISY.calibration_digest() == twin.calibration_digest()
    assert len(NOISY.calibration_digest()) == 64
    assert NOISY.calibration_digest() == PINNED_DIGEST


def test_calibration_digest_ignores_order_and_device_id() -> None:
    shuffled = dataclasses.replace(
        NOISY,
        device_id="another-name",
        basis_gates=("cx", "x", "sx", "rz"),
        coupling_map=((1, 2), (0, 1)),
    )
    assert shuffled.calibration_digest() == NOISY.calibration_digest()


@pytest.mark.parametrize(
    "changes",
    [
        {"two_qubit_error": 0.011},
        {"one_qubit_error": 0.002},
        {"readout_error": 0.03},
        {"num_qubits": 4},
        {"basis_gates": ("rz", "sx", "x", "ecr")},
        {"coupling_map": ((1, 0), (1, 2))},
        {"backend": "aer"},
    ],
    ids=lambda changes: next(iter(changes)),
)
def test_calibration_digest_changes_with_every_calibration_field(changes: dict[str, Any]) -> None:
    assert dataclasses.replace(NOISY, **changes).calibration_digest() != NOISY.calibration_digest()


def test_make_backend_picks_the_described_kind() -> None:
    assert isinstance(make_backend(NOISY), AerNoisyBackend)
    assert isinstance(make_backend(dataclasses.replace(NOISY, backend="aer")), AerIdealBackend)
    basic = make_backend(dataclasses.replace(NOISY, backend="basic"))
    assert isinstance(basic, BasicSimulatorBackend)
    assert basic.name == "basic"


def test_noise_model_covers_basis_gates_by_width_and_readout() -> None:
    errors = build_noise_model(NOISY).to_dict()["errors"]
    terms = {(e["type"], *e["operations"]): len(e["probabilities"]) for e in errors}
    # A one-qubit depolarizing channel has 4 Pauli terms, a two-qubit one 16.
    assert terms == {
        ("qerror", "rz"): 4,
        ("qerror", "sx"): 4,
        ("qerror", "x"): 4,
        ("qerror", "cx"): 16,
        ("roerror", "measure"): 2,
    }


def test_zero_error_figures_add_no_noise() -> None:
    silent = dataclasses.replace(NOISY, one_qubit_error=0.0, two_qubit_error=0.0, readout_error=0.0)
    assert build_noise_model(silent).is_ideal()
