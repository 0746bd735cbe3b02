"""The driver's own circuit decoding: it runs only what it parsed itself.

The broker already validated the payload against its limits (in an isolated process); the
driver does not import broker code, and re-parses rather than trusting what it was handed.
"""

from __future__ import annotations

import io

from qiskit import QuantumCircuit, qasm2, qasm3, qpy

from qtestbed.v1 import jobs_pb2


def decode_circuit(fmt: int, payload: bytes) -> QuantumCircuit:
    """Parse one circuit; ValueError (permanent for this job) when it cannot be run."""
    try:
        if fmt == jobs_pb2.CIRCUIT_FORMAT_OPENQASM2:
            circuit: QuantumCircuit = qasm2.loads(
                payload.decode("utf-8"), custom_instructions=qasm2.LEGACY_CUSTOM_INSTRUCTIONS
            )
            return circuit
        if fmt == jobs_pb2.CIRCUIT_FORMAT_OPENQASM3:
            circuit = qasm3.loads(payload.decode("utf-8"))
            return circuit
        if fmt == jobs_pb2.CIRCUIT_FORMAT_QPY:
            loaded = qpy.load(io.BytesIO(payload))
            if len(loaded) != 1:
                raise ValueError(f"QPY payload holds {len(loaded)} circuits, expected one")
            single: QuantumCircuit = loaded[0]
            return single
    except ValueError:
        raise
    except Exception as exc:
        raise ValueError(f"driver could not parse the circuit: {exc}") from None
    raise ValueError(f"unknown circuit format {fmt}")
