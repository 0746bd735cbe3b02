"""The codec's vocabulary: formats, limits, what a check learns, and the one error it raises.

Also the cheap checks that need no parser (shot count, payload size, register widths).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class CircuitFormat(enum.Enum):
    """How a circuit payload is encoded."""

    OPENQASM2 = "OPENQASM2"  # OpenQASM 2.0 source text (UTF-8)
    OPENQASM3 = "OPENQASM3"  # OpenQASM 3 source text (UTF-8)
    QPY = "QPY"  # Qiskit's binary QPY serialization of exactly one circuit


@dataclass(frozen=True, kw_only=True, slots=True)
class CircuitLimits:
    """What this broker accepts; `depth` counts loops unrolled and custom gates expanded."""

    max_payload_bytes: int = 256 * 1024
    max_qubits: int = 64
    max_clbits: int = 1024
    max_depth: int = 10_000
    min_shots: int = 1
    max_shots: int = 100_000


DEFAULT_LIMITS = CircuitLimits()


@dataclass(frozen=True, kw_only=True, slots=True)
class CircuitSummary:
    """What validation learns from a parsed circuit; small enough to cross a process boundary."""

    num_qubits: int
    num_clbits: int
    depth: int


class CircuitError(ValueError):
    """A circuit, payload or shot count that the codec refuses; the message is safe to show.

    `field` names the request field at fault: "payload", "circuit", "shots" or "format".
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def is_rust_panic(exc: BaseException) -> bool:
    """A Rust panic inside Qiskit surfaces as pyo3's PanicException, a BaseException."""
    return type(exc).__name__ == "PanicException"


def check_shots(shots: int, limits: CircuitLimits) -> None:
    """Reject a shot count outside the limits."""
    if isinstance(shots, bool) or not limits.min_shots <= shots <= limits.max_shots:
        raise CircuitError(
            "shots",
            f"shots must be between {limits.min_shots} and {limits.max_shots}, got {shots}",
        )


def check_size(payload: bytes, limits: CircuitLimits) -> None:
    """Reject an empty payload or one over the size limit, before any parser sees it."""
    if len(payload) > limits.max_payload_bytes:
        raise CircuitError(
            "payload",
            f"payload is {len(payload)} bytes; this broker accepts at most "
            f"{limits.max_payload_bytes} bytes",
        )
    if not payload:
        raise CircuitError("payload", "payload is empty; send an OpenQASM program or QPY file")


def check_width(qubits: int, clbits: int, limits: CircuitLimits, *, verb: str) -> None:
    """Reject more qubits or classical bits than the limits allow (`verb`: "declares", "has")."""
    if qubits > limits.max_qubits:
        raise CircuitError(
            "circuit",
            f"circuit {verb} {qubits} qubits; this broker accepts at most {limits.max_qubits}",
        )
    if clbits > limits.max_clbits:
        raise CircuitError(
            "circuit",
            f"circuit {verb} {clbits} classical bits; "
            f"this broker accepts at most {limits.max_clbits}",
        )
