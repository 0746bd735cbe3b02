"""The hardened circuit codec shared by the broker and the drivers.

It imports only the standard library and Qiskit, so both sides of the dependency rule may use
it: the broker validates submissions with it, and a driver re-parses what it was leased.
Everything it refuses is a `CircuitError` (a ValueError) whose message is safe to show.
"""

from qtestbed.shared.circuits.decoders import CircuitDecoder, InProcessDecoder, decode_payload
from qtestbed.shared.circuits.inspect import summarize_circuit
from qtestbed.shared.circuits.isolated import IsolatedDecoder
from qtestbed.shared.circuits.model import (
    DEFAULT_LIMITS,
    CircuitError,
    CircuitFormat,
    CircuitLimits,
    CircuitSummary,
    check_shots,
    check_size,
    check_width,
)
from qtestbed.shared.circuits.parse import parse_payload

__all__ = [
    "DEFAULT_LIMITS",
    "CircuitDecoder",
    "CircuitError",
    "CircuitFormat",
    "CircuitLimits",
    "CircuitSummary",
    "InProcessDecoder",
    "IsolatedDecoder",
    "check_shots",
    "check_size",
    "check_width",
    "decode_payload",
    "parse_payload",
    "summarize_circuit",
]
