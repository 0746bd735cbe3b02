"""OpenQASM 2 payloads through the decoder the isolated child runs (see `fuzz.circuits`)."""

from __future__ import annotations

from fuzz.circuits import cap_memory, decode
from qtestbed.shared.circuits.model import CircuitFormat

prepare = cap_memory


def one_input(data: bytes) -> None:
    decode(CircuitFormat.OPENQASM2, data)
