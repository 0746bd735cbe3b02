"""Reading a device's counts back into the shape of the circuit that was submitted.

Drivers key counts by bitstrings with clbit 0 rightmost and no spaces between registers; keys may
also be hex (`0x..`). `ClassicalLayout` remembers the circuit's name, registers and metadata so a
Qiskit `Result` can split the bits into registers again, and the Sampler can cut one `BitArray`
per register.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from qiskit import QuantumCircuit


class CountsFormatError(ValueError):
    """A counts key that is not an outcome of the submitted circuit."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ClassicalLayout:
    name: str
    num_clbits: int
    # (register name, clbit indices), in declaration order; index 0 is the rightmost bit.
    registers: tuple[tuple[str, tuple[int, ...]], ...]
    metadata: Mapping[str, object] = field(default_factory=dict)

    @classmethod
    def of(cls, circuit: QuantumCircuit) -> ClassicalLayout:
        registers = tuple(
            (str(reg.name), tuple(int(circuit.find_bit(bit).index) for bit in reg))
            for reg in circuit.cregs
        )
        return cls(
            name=str(circuit.name),
            num_clbits=int(circuit.num_clbits),
            registers=registers,
            metadata=dict(circuit.metadata or {}),
        )

    def header(self) -> dict[str, object]:
        """An experiment header as Qiskit's `Result.get_counts` reads it."""
        return {
            "name": self.name,
            "creg_sizes": [[name, len(bits)] for name, bits in self.registers],
            "memory_slots": self.num_clbits,
            "metadata": dict(self.metadata),
        }

    def outcomes(self, counts: Mapping[str, int]) -> dict[int, int]:
        """Counts keyed by integer outcome (bit i is clbit i); CountsFormatError for a key that
        does not fit this circuit's classical bits."""
        out: dict[int, int] = {}
        for key, count in counts.items():
            value = self._parse(key)
            out[value] = out.get(value, 0) + int(count)
        return out

    def _parse(self, key: str) -> int:
        text = key.replace(" ", "")
        try:
            if text.startswith("0x"):
                value = int(text, 16)
            elif text and set(text) <= {"0", "1"} and len(text) <= self.num_clbits:
                value = int(text, 2)
            else:
                raise ValueError
        except ValueError:
            raise CountsFormatError(
                f"counts key {key!r} is not an outcome of {self.num_clbits} classical bits"
            ) from None
        if value >> self.num_clbits:
            raise CountsFormatError(f"counts key {key!r} does not fit {self.num_clbits} bits")
        return value
