"""Calibration windows: the operator's tolerance for each calibration figure a device claims.

The calibration digest says *which* calibration configuration a device runs; the figures it
claims beside it (two-qubit and readout error, coherence times) are what the broker decides
with (the export class is derived from the two-qubit error), and a digest cannot vouch for
them: the verifier never sees the document behind it. So each figure is a reference value of
its own, a window [minimum, maximum] the operator sets, and a claim outside it (or a figure the
window expects but the evidence leaves out) fails appraisal with CALIBRATION_OUT_OF_RANGE,
naming the figure. A figure without a window is only checked for being physical when the
evidence is decoded (errors in [0, 1], coherence times positive).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from attestation.evidence import Measurements

__all__ = [
    "CALIBRATION_FIGURES",
    "NO_WINDOWS",
    "CalibrationWindows",
    "Tolerance",
    "calibration_reasons",
]

# Each figure a window can bound, with the unit its values are in.
CALIBRATION_FIGURES: dict[str, str] = {
    "two_qubit_error": "probability",
    "readout_error": "probability",
    "t1_us": "microseconds",
    "t2_us": "microseconds",
}
_PROBABILITIES = frozenset(
    name for name, unit in CALIBRATION_FIGURES.items() if unit == "probability"
)


@dataclass(frozen=True, kw_only=True, slots=True)
class Tolerance:
    """Accepted values of one figure: minimum <= value <= maximum; None leaves that side open,
    but never both (a window that accepts everything is no window: leave it unset)."""

    minimum: float | None = None
    maximum: float | None = None

    def __post_init__(self) -> None:
        if self.minimum is None and self.maximum is None:
            raise ValueError("a calibration window needs a minimum, a maximum or both")
        for bound in (self.minimum, self.maximum):
            if bound is not None and (not math.isfinite(bound) or bound < 0):
                raise ValueError(f"calibration window bounds must be finite and >= 0, got {bound}")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError(
                f"calibration window minimum {self.minimum} is above its maximum {self.maximum}"
            )

    def admits(self, value: float) -> bool:
        return (self.minimum is None or value >= self.minimum) and (
            self.maximum is None or value <= self.maximum
        )

    def describe(self) -> str:
        low = "-inf" if self.minimum is None else f"{self.minimum:g}"
        high = "+inf" if self.maximum is None else f"{self.maximum:g}"
        return f"[{low}, {high}]"


@dataclass(frozen=True, kw_only=True, slots=True)
class CalibrationWindows:
    """One tolerance window per calibration figure; None: that figure is not bounded."""

    two_qubit_error: Tolerance | None = None
    readout_error: Tolerance | None = None
    t1_us: Tolerance | None = None
    t2_us: Tolerance | None = None

    def __post_init__(self) -> None:
        for name in _PROBABILITIES:
            window = getattr(self, name)
            if window is not None and window.maximum is not None and window.maximum > 1:
                raise ValueError(f"{name} is a probability: its window maximum must be <= 1")

    def items(self) -> list[tuple[str, Tolerance]]:
        """The windows that are set, by figure name."""
        return [
            (f.name, window) for f in fields(self) if (window := getattr(self, f.name)) is not None
        ]

    def as_document(self) -> dict[str, list[float | None]]:
        """JSON form, {figure: [minimum, maximum]} for the windows set (null: open side)."""
        return {name: [window.minimum, window.maximum] for name, window in self.items()}

    @classmethod
    def from_document(cls, document: object) -> CalibrationWindows:
        """The inverse of `as_document`; ValueError naming what is wrong."""
        if not isinstance(document, dict):
            raise ValueError("calibration windows must be an object of figure: [min, max]")
        unknown = sorted(set(document) - set(CALIBRATION_FIGURES))
        if unknown:
            known = ", ".join(CALIBRATION_FIGURES)
            raise ValueError(f"unknown calibration figure {unknown[0]!r}; known: {known}")
        windows = {}
        for name, bounds in document.items():
            if not isinstance(bounds, list) or len(bounds) != 2:
                raise ValueError(f"calibration window {name} must be [minimum, maximum]")
            low, high = (_bound(name, b) for b in bounds)
            windows[name] = Tolerance(minimum=low, maximum=high)
        return cls(**windows)


def _bound(name: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"calibration window {name}: bounds must be numbers or null")
    return float(value)


# No figure bounded: what reference values published before calibration windows existed hold.
NO_WINDOWS = CalibrationWindows()


def calibration_reasons(got: Measurements, windows: CalibrationWindows) -> list[str]:
    """A detail (naming the figure) for every claimed figure outside its window, or missing
    from a claim that the window expects; empty when every window admits the claim. The
    appraisal reports each as CALIBRATION_OUT_OF_RANGE."""
    failures = []
    for name, window in windows.items():
        value: float | None = getattr(got, name)
        if value is None:
            failures.append(f"{name}: not claimed, the reference window is {window.describe()}")
        elif not window.admits(value):
            failures.append(
                f"{name}: claimed {value:g}, outside the reference window {window.describe()}"
            )
    return failures
