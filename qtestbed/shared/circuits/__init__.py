"""The hardened circuit codec shared by the broker and the drivers.

It imports only the standard library and Qiskit, so both sides of the dependency rule may use
it: the broker validates submissions with it, and a driver re-parses what it was leased.
Everything it refuses is a `CircuitError` (a ValueError) whose message is safe to show.

The names are loaded on first use: the vocabulary (`CircuitFormat`, limits, the cheap checks)
needs no Qiskit, so a client that only names a format does not pay half a second for it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qtestbed.shared.circuits.decoders import (
        CircuitDecoder,
        InProcessDecoder,
        decode_payload,
    )
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
    from qtestbed.shared.circuits.pool import DecodeDeadline, DecoderPool

_WHERE = {
    "CircuitDecoder": "decoders",
    "InProcessDecoder": "decoders",
    "decode_payload": "decoders",
    "summarize_circuit": "inspect",
    "IsolatedDecoder": "isolated",
    "DEFAULT_LIMITS": "model",
    "CircuitError": "model",
    "CircuitFormat": "model",
    "CircuitLimits": "model",
    "CircuitSummary": "model",
    "check_shots": "model",
    "check_size": "model",
    "check_width": "model",
    "parse_payload": "parse",
    "DecodeDeadline": "pool",
    "DecoderPool": "pool",
}

# Modules that import Qiskit when they load.
_WITH_QISKIT = frozenset({"inspect", "parse"})

__all__ = [
    "DEFAULT_LIMITS",
    "CircuitDecoder",
    "CircuitError",
    "CircuitFormat",
    "CircuitLimits",
    "CircuitSummary",
    "DecodeDeadline",
    "DecoderPool",
    "InProcessDecoder",
    "IsolatedDecoder",
    "check_shots",
    "check_size",
    "check_width",
    "decode_payload",
    "parse_payload",
    "summarize_circuit",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if module in _WITH_QISKIT:
        from qtestbed.shared.circuits.qiskit_home import import_qiskit

        import_qiskit()  # on a thread that outlives this one (see qiskit_home)
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value
