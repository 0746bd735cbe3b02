"""What a driver says about the device it runs: size, gates, wiring, error figures, physics
(T1, T2, gate durations), how it treats circuits that are not valid for it, simulator kind.

Descriptions come from the driver's TOML file (`as_dict`/`from_dict` round-trip through tomllib),
and `calibration_digest()` is the calibration-configuration measurement a driver attests to.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from qiskit.circuit.library import get_standard_gate_name_mapping

# The simulators qtestbed ships (each a backend plugin, `drivers.plugins.simulators`); any other
# backend name is a plugin found through the `qtestbed.backends` entry points.
BACKEND_KINDS = frozenset({"aer", "aer_noisy", "basic"})
# A backend name: what an entry point may be called (lower case, digits, _ . -).
_BACKEND_NAME = re.compile(r"[a-z][a-z0-9_.-]{0,63}")
ERROR_FIELDS = ("two_qubit_error", "one_qubit_error", "readout_error")
# Uniform over the device's qubits: relaxation times in microseconds, gate durations in
# nanoseconds. Left out of the calibration digest when absent, so the digests of devices that
# state no physics are what they were before these fields existed.
PHYSICS_FIELDS = ("t1_us", "t2_us", "one_qubit_gate_ns", "two_qubit_gate_ns")
# "translate": run a circuit valid for the target as sent, else translate it at optimisation
# level 0 (layout, routing, basis translation only). "exact": refuse any circuit that is not
# valid for the target as sent.
EXECUTION_MODES = frozenset({"translate", "exact"})
_REQUIRED = ("device_id", "num_qubits", "basis_gates", "coupling_map", "backend")
_SNAPSHOT = re.compile(r"[0-9a-f]{64}")
_DIGEST_SCHEMA = "qtestbed.calibration.v1"


@dataclass(frozen=True, kw_only=True, slots=True)
class DeviceDescription:
    """One device as its driver describes it; invalid values raise ValueError naming the field.

    `coupling_map` holds directed edges (control, target) as in Qiskit; an empty map means every
    qubit pair is connected. Error figures are probabilities in [0, 1): depolarizing parameters
    for one- and two-qubit basis gates and a symmetric readout flip; `aer_noisy` needs all three.
    `t1_us`/`t2_us` (optional, together) make `aer_noisy` relax every qubit thermally over each
    gate's duration (`one_qubit_gate_ns`, `two_qubit_gate_ns`) and over each `delay`; the same
    figures are what the driver attests to. `execution` is "translate" or "exact" (see
    `drivers.faithful`).
    """

    device_id: str
    num_qubits: int
    basis_gates: tuple[str, ...]
    coupling_map: tuple[tuple[int, int], ...]
    backend: str  # the backend plugin's name: "aer" | "aer_noisy" | "basic" | any installed
    two_qubit_error: float | None = None
    one_qubit_error: float | None = None
    readout_error: float | None = None
    t1_us: float | None = None
    t2_us: float | None = None
    one_qubit_gate_ns: float | None = None
    two_qubit_gate_ns: float | None = None
    execution: str = "translate"
    # SHA-256 hex of the device's full calibration snapshot (per-qubit and per-gate figures a
    # plugin reads from hardware, `drivers.plugins.api.Calibration`): the figures above are its
    # summary, so the digest must cover what they summarise. None for uniform simulators.
    calibration_snapshot: str | None = None

    def __post_init__(self) -> None:
        if not self.device_id or not self.device_id.isprintable():
            raise ValueError("device_id must be a non-empty printable string")
        if not isinstance(self.backend, str) or not _BACKEND_NAME.fullmatch(self.backend):
            raise ValueError(
                f"backend must name a backend plugin (lower case letters, digits, _ . -; e.g. "
                f"one of {sorted(BACKEND_KINDS)}), got {self.backend!r}"
            )
        if self.calibration_snapshot is not None and not _SNAPSHOT.fullmatch(
            self.calibration_snapshot
        ):
            raise ValueError("calibration_snapshot must be a SHA-256 hex digest")
        if isinstance(self.num_qubits, bool) or self.num_qubits < 1:
            raise ValueError(f"num_qubits must be a positive integer, got {self.num_qubits!r}")
        _check_basis_gates(self.basis_gates, needed=self.backend == "aer_noisy")
        _check_coupling_map(self.coupling_map, self.num_qubits)
        for name in ERROR_FIELDS:
            value = getattr(self, name)
            if value is None:
                if self.backend == "aer_noisy":
                    raise ValueError(f"{name} is required for the aer_noisy backend")
            elif isinstance(value, bool) or not (math.isfinite(value) and 0 <= value < 1):
                raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
        _check_physics(self)
        if self.execution not in EXECUTION_MODES:
            raise ValueError(
                f"execution must be one of {sorted(EXECUTION_MODES)}, got {self.execution!r}"
            )

    def calibration_digest(self) -> str:
        """SHA-256 hex over canonical JSON of everything that shapes results (not the device id).

        Edge and gate order do not matter, so both are sorted; floats use Python's shortest repr.
        """
        document = {
            "schema": _DIGEST_SCHEMA,
            "backend": self.backend,
            "num_qubits": self.num_qubits,
            "basis_gates": sorted(self.basis_gates),
            "coupling_map": sorted([a, b] for a, b in self.coupling_map),
            **{name: getattr(self, name) for name in ERROR_FIELDS},
            **{n: getattr(self, n) for n in PHYSICS_FIELDS if getattr(self, n) is not None},
        }
        if self.execution != "translate":
            document["execution"] = self.execution
        if self.calibration_snapshot is not None:
            document["calibration_snapshot"] = self.calibration_snapshot
        canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(canonical.encode("ascii")).hexdigest()

    def as_dict(self) -> dict[str, Any]:
        """A TOML-friendly mapping: lists instead of tuples, absent error figures left out."""
        data: dict[str, Any] = {
            "device_id": self.device_id,
            "num_qubits": self.num_qubits,
            "basis_gates": list(self.basis_gates),
            "coupling_map": [[a, b] for a, b in self.coupling_map],
            "backend": self.backend,
        }
        optional = (*ERROR_FIELDS, *PHYSICS_FIELDS)
        data.update({n: getattr(self, n) for n in optional if getattr(self, n) is not None})
        if self.execution != "translate":
            data["execution"] = self.execution
        if self.calibration_snapshot is not None:
            data["calibration_snapshot"] = self.calibration_snapshot
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeviceDescription:
        """Build from a parsed TOML table; unknown, missing or mistyped fields raise ValueError."""
        known = {*_REQUIRED, *ERROR_FIELDS, *PHYSICS_FIELDS, "execution", "calibration_snapshot"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown field {unknown[0]!r} in device description")
        missing = [name for name in _REQUIRED if name not in data]
        if missing:
            raise ValueError(f"{missing[0]} is required in a device description")
        return cls(
            device_id=_typed(data, "device_id", str),
            num_qubits=_typed(data, "num_qubits", int),
            basis_gates=tuple(
                _typed(g, "basis_gates", str) for g in _sequence(data, "basis_gates")
            ),
            coupling_map=tuple(_edge(edge) for edge in _sequence(data, "coupling_map")),
            backend=_typed(data, "backend", str),
            **{name: _error_figure(data, name) for name in (*ERROR_FIELDS, *PHYSICS_FIELDS)},
            execution=_typed(data, "execution", str) if "execution" in data else "translate",
            calibration_snapshot=(
                _typed(data, "calibration_snapshot", str)
                if "calibration_snapshot" in data
                else None
            ),
        )


def _typed(value: Any, name: str, kind: type[Any]) -> Any:
    """`value[name]` (or `value` itself when it is not a mapping) if it is a `kind`, not a bool."""
    item = value[name] if isinstance(value, Mapping) else value
    if isinstance(item, bool) or not isinstance(item, kind):
        raise ValueError(f"{name} must be of type {kind.__name__}, got {item!r}")
    return item


def _sequence(data: Mapping[str, Any], name: str) -> list[Any] | tuple[Any, ...]:
    value = data[name]
    if not isinstance(value, list | tuple):
        raise ValueError(f"{name} must be a list, got {value!r}")
    return value


def _edge(edge: Any) -> tuple[int, int]:
    if not isinstance(edge, list | tuple) or len(edge) != 2:
        raise ValueError(f"coupling_map edges must be [control, target] pairs, got {edge!r}")
    return (_typed(edge[0], "coupling_map", int), _typed(edge[1], "coupling_map", int))


def _error_figure(data: Mapping[str, Any], name: str) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    return float(value)


def _check_basis_gates(basis_gates: tuple[str, ...], *, needed: bool) -> None:
    known = get_standard_gate_name_mapping()
    if needed and not basis_gates:
        raise ValueError("basis_gates must not be empty for the aer_noisy backend")
    if len(set(basis_gates)) != len(basis_gates):
        raise ValueError("basis_gates lists a gate twice")
    for gate in basis_gates:
        if gate not in known:
            raise ValueError(f"basis_gates: {gate!r} is not a standard Qiskit gate name")


def _check_coupling_map(edges: tuple[tuple[int, int], ...], num_qubits: int) -> None:
    if len(set(edges)) != len(edges):
        raise ValueError("coupling_map lists an edge twice")
    for control, target in edges:
        if not (0 <= control < num_qubits and 0 <= target < num_qubits) or control == target:
            raise ValueError(
                f"coupling_map edge ({control}, {target}) must join two different qubits "
                f"in 0..{num_qubits - 1}"
            )


def _check_physics(d: DeviceDescription) -> None:
    """Finite figures; T1 and T2 positive, given together, T2 <= 2 T1 (as physics requires)."""
    for name in PHYSICS_FIELDS:
        value = getattr(d, name)
        if value is None:
            continue
        # A relaxation time of 0 is no qubit at all; a gate may take no time (a frame change).
        positive = name in ("t1_us", "t2_us")
        if (
            isinstance(value, bool)
            or not math.isfinite(value)
            or value < 0
            or (positive and value == 0)
        ):
            bound = "> 0" if positive else ">= 0"
            raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    if (d.t1_us is None) != (d.t2_us is None):
        raise ValueError("t1_us and t2_us must be given together")
    if d.t1_us is not None and d.t2_us is not None and d.t2_us > 2 * d.t1_us:
        raise ValueError(f"t2_us ({d.t2_us}) must not exceed 2 * t1_us ({2 * d.t1_us})")
