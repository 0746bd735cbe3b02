"""The driver's own circuit decoding: it runs only what it parsed and checked itself.

The driver does not import broker code and does not trust the broker's parse: it re-parses the
leased payload with the shared codec (`qtestbed.shared.circuits`) under the default limits. That
gives it the checks broker validation applies: payload size; OpenQASM 2 `include` of
`qelib1.inc` only; register widths, physical qubits and range bounds scanned before parsing;
parser errors and Rust panics turned into one-line errors; measurement required; no unbound
parameters or `while` loops; depth counted with loops unrolled. A broker configured with larger
limits than the defaults can lease a circuit that this driver then refuses, except for width:
a circuit may be as wide as the device (a transpiled circuit spans all of its qubits).

Parsing runs in this process, not in an isolated child, and no check bounds what Qiskit's QPY
reader allocates for a forged length field: such a payload can exhaust or abort the driver
process. The driver is disposable (the shipped systemd unit restarts it); the broker requeues
the job when its lease expires and fails it once its attempts are used up.
"""

from __future__ import annotations

import dataclasses

from qiskit import QuantumCircuit

from qtestbed.shared.circuits import DEFAULT_LIMITS, CircuitError, CircuitLimits, decode_payload
from qtestbed.shared.wire import format_from_proto


def decode_circuit(fmt: int, payload: bytes, *, device_qubits: int = 0) -> QuantumCircuit:
    """Parse and check one leased circuit (`fmt` is a `jobs_pb2.CIRCUIT_FORMAT_*` value) for a
    device of `device_qubits` qubits.

    Raises ValueError (a CircuitError, permanent for this job) when it cannot be run.
    """
    circuit_format = format_from_proto(fmt)
    if circuit_format is None:
        raise CircuitError("format", f"driver refused the circuit: unknown circuit format {fmt}")
    try:
        circuit, _summary = decode_payload(circuit_format, payload, _limits(device_qubits))
    except CircuitError as exc:
        raise CircuitError(exc.field, f"driver refused the circuit: {exc}") from None
    return circuit


def _limits(device_qubits: int) -> CircuitLimits:
    if device_qubits <= DEFAULT_LIMITS.max_qubits:
        return DEFAULT_LIMITS
    return dataclasses.replace(DEFAULT_LIMITS, max_qubits=device_qubits)
