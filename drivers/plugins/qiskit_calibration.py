"""A Qiskit backend's target read as a qtestbed device description and calibration.

Everything comes from `backend.target`, the BackendV2 interface every vendor's provider offers:
qubits, the standard gates it runs (its basis), the directed edges of its two-qubit gates (the
coupling map), and per-gate errors and durations, per-qubit T1/T2 and readout errors. The whole
set is the calibration snapshot, digested into the calibration digest the device attests; the
summary figures the broker decides with are means over the device:

- two_qubit_error: the mean error of the two-qubit basis gates over the coupled pairs (the
  export-control definition: average physical two-qubit gate error of nearest-neighbour gates);
  a gate reported with error 1 is a pair the provider marks as not working, and is left out of
  every mean (the snapshot digest still covers it);
- one_qubit_error: the mean error of the one-qubit basis gates that have one (virtual gates such
  as `rz`, reported with error 0, are left out); readout_error: the mean measurement error;
- t1_us, t2_us: the means over the qubits that report them; gate durations likewise, in ns.
"""

from __future__ import annotations

import math
from statistics import fmean
from typing import Any

from qiskit.circuit import CONTROL_FLOW_OP_NAMES
from qiskit.circuit.library import get_standard_gate_name_mapping

from drivers.device import DeviceDescription
from drivers.faithful import DIRECTIVES, DeviceTarget, directed_edges
from drivers.plugins.api import Calibration

_STANDARD = get_standard_gate_name_mapping()


def calibration_of(target: Any) -> Calibration:
    """Every figure the target reports, by gate and qubits, and per qubit."""
    gates: dict[str, dict[str, list[float | None]]] = {}
    for name in sorted(target.operation_names):
        if name not in _STANDARD:
            continue
        props = target[name] or {}
        gates[name] = {
            ",".join(map(str, qargs)): [_number(p.error), _number(p.duration)]
            for qargs, p in sorted(props.items(), key=lambda kv: kv[0] or ())
            if qargs is not None and p is not None
        }
    qubits = []
    for index, q in enumerate(target.qubit_properties or []):
        t1, t2 = (_number(getattr(q, k, None)) if q is not None else None for k in ("t1", "t2"))
        qubits.append({"qubit": index, "t1": t1, "t2": t2})
    return Calibration(document={"num_qubits": target.num_qubits, "gates": gates, "qubits": qubits})


def describe_target(
    target: Any, *, device_id: str, backend: str, execution: str
) -> DeviceDescription:
    """The device description of a Qiskit target, with the calibration's summary and digest."""
    calibration = calibration_of(target)
    gates: dict[str, dict[str, list[float | None]]] = calibration.document["gates"]
    basis = tuple(n for n in gates if n not in DIRECTIVES)
    two_qubit = [n for n in basis if _STANDARD[n].num_qubits == 2]
    one_qubit = [n for n in basis if _STANDARD[n].num_qubits == 1]
    # A pair reported with error 1 is not working: not offered, so no layout lands on it.
    edges = sorted(
        {_edge(k) for n in two_qubit for k, v in gates[n].items() if v[0] is None or v[0] < 1}
    )
    t1 = _mean(q["t1"] for q in calibration.document["qubits"])
    t2 = _mean(q["t2"] for q in calibration.document["qubits"])
    if t1 is None or t2 is None or t2 > 2 * t1:
        # Means keep T2 <= 2 T1 when every qubit does; a snapshot that breaks physics on
        # average (or lacks either) leaves both out rather than attest impossible figures.
        t1 = t2 = None
    return DeviceDescription(
        device_id=device_id,
        num_qubits=target.num_qubits,
        basis_gates=basis,
        coupling_map=tuple(edges),
        backend=backend,
        two_qubit_error=_mean(v[0] for n in two_qubit for v in gates[n].values()),
        one_qubit_error=_mean(v[0] for n in one_qubit for v in gates[n].values() if v[0]),
        readout_error=_mean(v[0] for v in gates.get("measure", {}).values()),
        t1_us=_scaled(t1, 1e6),
        t2_us=_scaled(t2, 1e6),
        one_qubit_gate_ns=_scaled(_mean(v[1] for n in one_qubit for v in gates[n].values()), 1e9),
        two_qubit_gate_ns=_scaled(_mean(v[1] for n in two_qubit for v in gates[n].values()), 1e9),
        execution=execution,
        calibration_snapshot=calibration.digest(),
    )


def device_target(description: DeviceDescription, target: Any) -> DeviceTarget:
    """What a circuit must satisfy to run as sent on the backend."""
    return DeviceTarget(
        num_qubits=description.num_qubits,
        basis=frozenset(description.basis_gates),
        edges=directed_edges(description.coupling_map),
        control_flow=frozenset(target.operation_names) & CONTROL_FLOW_OP_NAMES,
    )


def _edge(key: str) -> tuple[int, int]:
    a, b = key.split(",")
    return int(a), int(b)


def _number(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _mean(values: Any) -> float | None:
    present = [v for v in values if v is not None and v < 1]
    return fmean(present) if present else None


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor
