"""Per-shot memory: every shot's measured bits, in shot order, packed compactly.

A device that records memory reports one outcome per shot. Each outcome is `width` classical
bits (clbit 0 the least significant, as Qiskit prints bitstrings with clbit 0 rightmost) packed
big-endian into `ceil(width / 8)` bytes; the shots follow each other in the order they ran.
The receipt binds `memory_digest`, which covers the width and every byte, so one changed shot
fails verification; the counts a device reports must be exactly the histogram of its memory.

Memory is bounded: shots x width may not exceed `MAX_MEMORY_BITS` (512 KiB packed), so a
result stays well inside one gRPC message and one database row.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

MAX_MEMORY_BITS = 1 << 22
"""Most shots x classical bits one result may record as per-shot memory."""

_DOMAIN = b"qtestbed.shot-memory.v1\x00"


class ShotMemoryError(ValueError):
    """Memory that is malformed or too large; the message says which."""


def check_size(shots: int, width: int) -> None:
    """ShotMemoryError when `shots` outcomes of `width` bits exceed the bound."""
    if width < 1:
        raise ShotMemoryError("per-shot memory needs at least one classical bit")
    if shots * width > MAX_MEMORY_BITS:
        raise ShotMemoryError(
            f"per-shot memory of {shots} shots x {width} classical bits = {shots * width} bits "
            f"exceeds the limit of {MAX_MEMORY_BITS} bits; ask for fewer shots or leave memory off"
        )


@dataclass(frozen=True, slots=True)
class ShotMemory:
    """`width` bits per shot, packed; see the module docstring for the layout."""

    width: int
    packed: bytes

    def __post_init__(self) -> None:
        if self.width < 1:
            raise ShotMemoryError("per-shot memory needs at least one classical bit")
        if len(self.packed) % self.bytes_per_shot:
            raise ShotMemoryError(
                f"per-shot memory of {len(self.packed)} bytes is not a whole number of "
                f"{self.bytes_per_shot}-byte shots"
            )
        check_size(self.shots, self.width)

    @property
    def bytes_per_shot(self) -> int:
        return (self.width + 7) // 8

    @property
    def shots(self) -> int:
        return len(self.packed) // self.bytes_per_shot

    @classmethod
    def from_bitstrings(cls, bitstrings: Sequence[str], width: int) -> ShotMemory:
        """From Qiskit-style bitstrings (clbit 0 rightmost; spaces between registers ignored)."""
        check_size(len(bitstrings), width)
        size = (width + 7) // 8
        out = bytearray()
        for text in bitstrings:
            bits = text.replace(" ", "")
            if len(bits) != width or not set(bits) <= {"0", "1"}:
                raise ShotMemoryError(f"shot {text!r} is not a {width}-bit outcome")
            out += int(bits, 2).to_bytes(size, "big")
        return cls(width, bytes(out))

    def values(self) -> list[int]:
        """Each shot's outcome as an integer (bit i is clbit i), in shot order."""
        size = self.bytes_per_shot
        data = self.packed
        values = [int.from_bytes(data[i : i + size], "big") for i in range(0, len(data), size)]
        if any(value >> self.width for value in values):
            raise ShotMemoryError(f"a shot sets bits beyond its {self.width} classical bits")
        return values

    def bitstrings(self) -> list[str]:
        """Each shot as a bitstring with clbit 0 rightmost, in shot order."""
        return [format(value, f"0{self.width}b") for value in self.values()]

    def histogram(self) -> dict[str, int]:
        """Counts keyed as devices key them: full-width bitstrings, clbit 0 rightmost."""
        return dict(Counter(self.bitstrings()))

    def digest(self) -> str:
        """Hex SHA-256 over the width and every packed byte (what a receipt binds)."""
        return hashlib.sha256(_DOMAIN + self.width.to_bytes(4, "big") + self.packed).hexdigest()


def memory_problems(memory: ShotMemory, counts: Mapping[str, int], shots: int) -> list[str]:
    """Every way `memory` disagrees with the reported counts and shot total."""
    problems = []
    if memory.shots != shots:
        problems.append(f"per-shot memory holds {memory.shots} shots, expected {shots}")
    try:
        histogram = memory.histogram()
    except ShotMemoryError as exc:
        return [*problems, str(exc)]
    if histogram != {key: int(value) for key, value in counts.items() if value}:
        problems.append("the counts are not the histogram of the per-shot memory")
    return problems


def outcome_width(keys: Iterable[str]) -> int | None:
    """The common length of bitstring keys, None when they differ or there are none."""
    widths = {len(key) for key in keys}
    return widths.pop() if len(widths) == 1 else None
