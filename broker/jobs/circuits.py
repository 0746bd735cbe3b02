"""Circuit validation at the broker edge: the shared codec's checks, as broker errors.

Parsing and inspection live in `qtestbed.shared.circuits`, which the drivers use too when they
re-parse what they are leased. This module runs those checks on a submission, turns a refusal into
CircuitRejected (INVALID_ARGUMENT, naming the field at fault) and builds the domain's Circuit.

Validation must stay cheap and never simulate. The parsers are not safe in-process against a
hostile QPY payload (see `qtestbed.shared.circuits.isolated`), so the broker should pass an
`IsolatedDecoder` and call `validate_circuit` off its event loop.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from attestation.shot_memory import ShotMemoryError
from attestation.shot_memory import check_size as check_memory_size
from broker.errors import BrokerError, ErrorCode
from broker.jobs.model import Circuit
from qtestbed.shared.circuits import (
    DEFAULT_LIMITS,
    CircuitDecoder,
    CircuitError,
    CircuitFormat,
    CircuitLimits,
    CircuitSummary,
    DecoderPool,
    InProcessDecoder,
    IsolatedDecoder,
    check_shots,
    check_size,
    decode_payload,
)

if TYPE_CHECKING:
    from qiskit import QuantumCircuit

__all__ = [
    "DEFAULT_LIMITS",
    "BrokerDecoder",
    "CircuitDecoder",
    "CircuitLimits",
    "CircuitRejected",
    "CircuitSummary",
    "DecoderPool",
    "InProcessDecoder",
    "IsolatedDecoder",
    "load_circuit",
    "validate_circuit",
]


class CircuitRejected(BrokerError):
    """A circuit or its shot count that this broker will not run; maps to INVALID_ARGUMENT.

    `field` names the request field at fault: "payload", "circuit", "shots", "format", "memory"
    or "digest".
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(ErrorCode.INVALID_ARGUMENT, message)
        self.field = field

    @classmethod
    def from_error(cls, error: CircuitError) -> CircuitRejected:
        return cls(error.field, str(error))


@contextmanager
def _rejecting() -> Iterator[None]:
    """Turn the codec's CircuitError into CircuitRejected, keeping its field and message."""
    try:
        yield
    except CircuitError as exc:
        raise CircuitRejected.from_error(exc) from exc


_IN_PROCESS = InProcessDecoder()


def validate_circuit(
    fmt: CircuitFormat,
    payload: bytes,
    shots: int,
    limits: CircuitLimits = DEFAULT_LIMITS,
    *,
    decoder: CircuitDecoder | None = None,
    memory: bool = False,
) -> Circuit:
    """Check a submitted circuit and shot count against `limits`; raise CircuitRejected if not.

    With `memory` (per-shot memory asked for) shots x classical bits must fit its bound.
    Without a `decoder` the payload is parsed in this process (fine for tests and tools).
    """
    with _rejecting():
        check_shots(shots, limits)
        check_size(payload, limits)
        summary = (decoder or _IN_PROCESS).summarize(fmt, payload, limits)
    if memory:
        try:
            check_memory_size(shots, summary.num_clbits)
        except ShotMemoryError as exc:
            raise CircuitRejected("memory", str(exc)) from None
    return Circuit(
        format=fmt,
        payload=payload,
        digest=hashlib.sha256(payload).hexdigest(),
        num_qubits=summary.num_qubits,
        depth=summary.depth,
    )


def load_circuit(circuit: Circuit, limits: CircuitLimits = DEFAULT_LIMITS) -> QuantumCircuit:
    """Parse a validated circuit again (in this process), re-checking what the broker claimed."""
    actual = hashlib.sha256(circuit.payload).hexdigest()
    if not hmac.compare_digest(actual.encode(), circuit.digest.encode()):
        raise CircuitRejected(
            "digest", "circuit payload does not match its digest; the job must be resubmitted"
        )
    with _rejecting():
        qc, summary = decode_payload(circuit.format, circuit.payload, limits)
    if (summary.num_qubits, summary.depth) != (circuit.num_qubits, circuit.depth):
        raise CircuitRejected(
            "circuit",
            f"circuit has {summary.num_qubits} qubits and depth {summary.depth}, but the job "
            f"says {circuit.num_qubits} and {circuit.depth}; the job must be resubmitted",
        )
    return qc


class BrokerDecoder:
    """The broker's choice of decoder per format.

    OpenQASM 2 is parsed in-process (on a worker thread): Qiskit's parser for it is Rust, the
    include path is restricted to qelib1.inc, register sizes are pre-scanned before parsing and
    a Rust panic is caught, so the known ways to crash or balloon it are closed. QPY (whose
    reader can be driven to abort the process or allocate gigabytes) and OpenQASM 3 (a slow
    pure-Python parser) go to the isolated, memory-capped child processes (a `DecoderPool`).
    """

    def __init__(self, isolated: CircuitDecoder) -> None:
        self.isolated = isolated
        self._in_process = InProcessDecoder()

    def summarize(
        self, fmt: CircuitFormat, payload: bytes, limits: CircuitLimits
    ) -> CircuitSummary:
        if fmt is CircuitFormat.OPENQASM2:
            return self._in_process.summarize(fmt, payload, limits)
        return self.isolated.summarize(fmt, payload, limits)
