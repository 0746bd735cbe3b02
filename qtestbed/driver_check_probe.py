"""The circuits `qtestbed driver check` runs on a device, chosen from what the device describes:
GHZ-n where the device can make a superposition, and, on a device that runs only its own
classical reversible gates exactly (no `h`, no translation), X then a CX chain, whose answer is
every bit 1. Either way the check is judged against the device's own error figures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from qtestbed.cli.demo import ghz_qasm2

if TYPE_CHECKING:
    from drivers.device import DeviceDescription


def chain_qasm2(n: int) -> bytes:
    body = "".join(f"cx q[{i}],q[{i + 1}];\n" for i in range(n - 1))
    return (
        f'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[{n}];\ncreg c[{n}];\n'
        f"x q[0];\n{body}measure q -> c;\n"
    ).encode()


@dataclass(frozen=True, slots=True)
class Probe:
    device: DeviceDescription

    @property
    def quantum(self) -> bool:
        exact = self.device.execution == "exact"
        return not exact or "h" in self.device.basis_gates

    def qasm(self, n: int) -> bytes:
        return ghz_qasm2(n) if self.quantum else chain_qasm2(n)

    def name(self, n: int) -> str:
        return f"GHZ-{n}" if self.quantum else f"X then a CX chain on {n} bits (no h here)"

    def judge(self, counts: dict[str, int], n: int, shots: int) -> tuple[bool, str, str]:
        """Whether `counts` are right within the device's error figures, what was seen and
        what was expected."""
        zeros, ones = counts.get("0" * n, 0) / shots, counts.get("1" * n, 0) / shots
        bound = self.bound(n)
        if not self.quantum:
            seen = f"P({'1' * n})={ones:.3f} over {shots} shots"
            return ones >= bound, seen, f"P({'1' * n}) >= {bound:.3f}"
        seen = f"P({'0' * n})={zeros:.3f}, P({'1' * n})={ones:.3f} over {shots} shots"
        right = zeros + ones >= bound and min(zeros, ones) >= 0.3 * (zeros + ones)
        return right, seen, f"the two together >= {bound:.3f}, each about half"

    def bound(self, n: int) -> float:
        """The least share of right answers the device's error figures allow, with slack."""
        d = self.device
        kept = (1 - (d.two_qubit_error or 0.0)) ** (n - 1)
        kept *= (1 - (d.one_qubit_error or 0.0)) ** (3 * n)  # h/x and the translation's 1q gates
        kept *= (1 - (d.readout_error or 0.0)) ** n
        return max(0.0, 1 - 2 * (1 - kept) - 0.05)
