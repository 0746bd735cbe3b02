"""Turning a payload into a checked circuit in the calling process, and the decoder port.

Qiskit (a second or more to import) is loaded by the first decode, not by importing this
module: a broker answers its first call before it has parsed anything, and a decoder child
imports it in its own process, after lowering its priority.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from qtestbed.shared.circuits.model import (
    DEFAULT_LIMITS,
    CircuitFormat,
    CircuitLimits,
    CircuitSummary,
    check_size,
)
from qtestbed.shared.circuits.qiskit_home import import_qiskit

if TYPE_CHECKING:
    from qiskit import QuantumCircuit


class CircuitDecoder(Protocol):
    """Turns a payload into a checked summary, or raises CircuitError."""

    def summarize(
        self, fmt: CircuitFormat, payload: bytes, limits: CircuitLimits
    ) -> CircuitSummary: ...


def decode_payload(
    fmt: CircuitFormat, payload: bytes, limits: CircuitLimits = DEFAULT_LIMITS
) -> tuple[QuantumCircuit, CircuitSummary]:
    """Check the size, parse and inspect a payload in this process; raise CircuitError if not.

    Every check runs, but the parsers run here: a QPY payload with a forged length field can
    still exhaust this process's memory or abort it (see `IsolatedDecoder`).
    """
    import_qiskit()  # before the codecs import it, on whatever thread this is
    from qtestbed.shared.circuits.inspect import summarize_circuit
    from qtestbed.shared.circuits.parse import parse_payload

    check_size(payload, limits)
    circuit = parse_payload(fmt, payload, limits)
    return circuit, summarize_circuit(circuit, limits)


class InProcessDecoder:
    """Parses in the calling process: fine for disposable processes and tests, not for a server
    that must survive hostile QPY (use `IsolatedDecoder` there)."""

    def summarize(
        self, fmt: CircuitFormat, payload: bytes, limits: CircuitLimits
    ) -> CircuitSummary:
        return decode_payload(fmt, payload, limits)[1]
