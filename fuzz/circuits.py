"""The circuit decoders as the isolated decoder child runs them: the same size check, parser,
inspection and limits (`decode_payload` with `DEFAULT_LIMITS`).

Documented failures: `CircuitError`, and `MemoryError`, which the child answers as a rejection
(its address space is capped, as `cap_memory` caps this process)."""

from __future__ import annotations

import contextlib
import resource

from qtestbed.shared.circuits.decoders import decode_payload
from qtestbed.shared.circuits.model import DEFAULT_LIMITS, CircuitError, CircuitFormat

# The child's cap over its size after importing Qiskit (IsolatedDecoder's default).
CHILD_MEMORY_BYTES = 1 << 30


def decode(fmt: CircuitFormat, data: bytes) -> None:
    with contextlib.suppress(CircuitError, MemoryError):
        decode_payload(fmt, data, DEFAULT_LIMITS)


def cap_memory() -> None:
    """Cap the address space as `isolated.prepare_child` does, so a payload that would exhaust
    the child's memory raises MemoryError here rather than taking the machine's."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        current = int(statm.read().split()[0]) * resource.getpagesize()
    limit = current + CHILD_MEMORY_BYTES
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY or soft > limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
