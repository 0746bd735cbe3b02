"""Export-control class of a device, derived from its attested calibration.

A profile is a table of bands on physical qubit count, each with the highest two-qubit (C-NOT)
error at which a device in that band is controlled. The shipped default is the US ECCN 4A906.a
table (89 FR 72926); a deployment passes the path of its own profile in the broker settings.

Comparisons are exact decimals: thresholds are read as the decimal written in the profile, and
a reported error is read as the shortest decimal that round-trips its float (``repr``), rounded
to ``ERROR_SIGNIFICANT_DIGITS`` significant digits. So a calibration reporting ``0.0001`` is
exactly at a ``1e-4`` threshold, and float noise such as ``1 - 0.999`` (0.0010000000000000009)
cannot move a device out of control: no calibration is that precise, and the rounding can only
move an error onto a threshold, never across it. An unknown error classifies conservatively as
controlled.

The profile path is configurable. ``DEFAULT_PROFILE`` resolves to ``deploy/policy/`` relative to
the repository root, so it only exists when running from a checkout; a deployment passes the
path of its profile in the broker settings.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

# deploy/ sits next to broker/ in a checkout; an installed broker has no deploy/ and must be
# given the profile path in its settings.
DEFAULT_PROFILE = (
    Path(__file__).resolve().parents[2] / "deploy" / "policy" / "export-control-4A906.toml"
)

SCHEMA_VERSION = 1
ERROR_SIGNIFICANT_DIGITS = 12
_ERROR_CONTEXT = Context(prec=ERROR_SIGNIFICANT_DIGITS, rounding=ROUND_HALF_EVEN)

_TOP_KEYS = frozenset(
    {
        "schema_version",
        "name",
        "source",
        "controlled_class",
        "uncontrolled_class",
        "inputs",
        "bands",
    }
)
_INPUT_KEYS = frozenset({"num_qubits", "two_qubit_error"})
_BAND_KEYS = frozenset({"min_qubits", "max_qubits", "max_cnot_error", "verified", "source"})


class ProfileError(ValueError):
    """An export-control profile is unreadable or invalid; the message names the file and band."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ExportBand:
    """Devices with min_qubits..max_qubits qubits (inclusive) and error <= max_cnot_error."""

    min_qubits: int
    max_qubits: int | None  # None: no upper bound
    max_cnot_error: Decimal | None  # None: controlled at any error
    verified: bool
    source: str

    @property
    def label(self) -> str:
        """The qubit range, e.g. ``34-99`` or ``2000+``."""
        return _range_label(self.min_qubits, self.max_qubits)

    def contains(self, num_qubits: int) -> bool:
        return num_qubits >= self.min_qubits and (
            self.max_qubits is None or num_qubits <= self.max_qubits
        )

    def describe(self) -> str:
        if self.max_cnot_error is None:
            return f"band {self.label} qubits, any C-NOT error"
        return f"band {self.label} qubits, C-NOT error <= {self.max_cnot_error}"


@dataclass(frozen=True, kw_only=True, slots=True)
class ExportProfile:
    """A validated threshold table: bands ascending by qubit count, never overlapping."""

    name: str
    source: str
    controlled_class: str
    uncontrolled_class: str
    qubits_definition: str
    error_definition: str
    bands: tuple[ExportBand, ...]

    def band_for(self, num_qubits: int) -> ExportBand | None:
        return next((b for b in self.bands if b.contains(num_qubits)), None)


@dataclass(frozen=True, kw_only=True, slots=True)
class Classification:
    """The export class of a device; ``band`` is the band that made it controlled, else None."""

    export_class: str
    band: ExportBand | None
    reason: str


def load_profile(path: Path | str) -> ExportProfile:
    """Read and validate a profile; raise ProfileError naming the file and the offending band."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ProfileError(f"cannot read export-control profile {path}: {exc}") from exc
    try:
        return parse_profile(raw)
    except ProfileError as exc:
        raise ProfileError(f"export-control profile {path}: {exc}") from exc


def parse_profile(raw: Mapping[str, Any]) -> ExportProfile:
    """Validate an already-parsed profile table (see ``load_profile``)."""
    _reject_unknown(raw, _TOP_KEYS, "profile")
    version = raw.get("schema_version")
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise ProfileError(f"schema_version must be {SCHEMA_VERSION}, got {version!r}")
    inputs = raw.get("inputs")
    if not isinstance(inputs, Mapping):
        raise ProfileError("missing [inputs] table defining num_qubits and two_qubit_error")
    _reject_unknown(inputs, _INPUT_KEYS, "[inputs]")
    controlled = _text(raw, "controlled_class", "profile")
    uncontrolled = _text(raw, "uncontrolled_class", "profile")
    if controlled == uncontrolled:
        raise ProfileError("controlled_class and uncontrolled_class must differ")
    return ExportProfile(
        name=_text(raw, "name", "profile"),
        source=_text(raw, "source", "profile"),
        controlled_class=controlled,
        uncontrolled_class=uncontrolled,
        qubits_definition=_text(inputs, "num_qubits", "[inputs]"),
        error_definition=_text(inputs, "two_qubit_error", "[inputs]"),
        bands=_parse_bands(raw.get("bands")),
    )


def _parse_bands(raw: object) -> tuple[ExportBand, ...]:
    if not isinstance(raw, list) or not raw:
        raise ProfileError("at least one [[bands]] entry is required")
    bands: list[ExportBand] = []
    for index, entry in enumerate(raw, start=1):
        where = f"band {index}"
        if not isinstance(entry, Mapping):
            raise ProfileError(f"{where}: must be a table")
        band = _parse_band(entry, where)
        where = f"band {index} ({band.label} qubits)"
        if bands:
            _check_order(bands[-1], band, where)
        bands.append(band)
    return tuple(bands)


def _parse_band(entry: Mapping[str, Any], where: str) -> ExportBand:
    _reject_unknown(entry, _BAND_KEYS, where)
    low = _count(entry, "min_qubits", where)
    high = _count(entry, "max_qubits", where) if "max_qubits" in entry else None
    if low < 1:
        raise ProfileError(f"{where}: min_qubits must be at least 1, got {low}")
    if high is not None and high < low:
        raise ProfileError(f"{where}: max_qubits {high} is below min_qubits {low}")
    where = f"{where} ({_range_label(low, high)} qubits)"
    verified = entry.get("verified", False)
    if not isinstance(verified, bool):
        raise ProfileError(f"{where}: verified must be true or false")
    return ExportBand(
        min_qubits=low,
        max_qubits=high,
        max_cnot_error=_error_threshold(entry.get("max_cnot_error"), where),
        verified=verified,
        source=_text(entry, "source", where),
    )


def _check_order(previous: ExportBand, band: ExportBand, where: str) -> None:
    if previous.max_qubits is None:
        raise ProfileError(
            f"{where}: follows the open-ended band {previous.label}; only the last band may "
            "omit max_qubits"
        )
    if band.min_qubits <= previous.max_qubits:
        raise ProfileError(
            f"{where}: overlaps or precedes band {previous.label}; bands must be in ascending "
            "order of qubit count and must not overlap"
        )


def _error_threshold(value: object, where: str) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ProfileError(f"{where}: max_cnot_error must be a number, got {value!r}")
    try:
        threshold = Decimal(repr(value) if isinstance(value, float) else str(value).strip())
    except InvalidOperation:
        raise ProfileError(f"{where}: max_cnot_error {value!r} is not a number") from None
    if not threshold.is_finite() or not Decimal(0) <= threshold <= Decimal(1):
        raise ProfileError(f"{where}: max_cnot_error {value!r} is outside [0, 1]")
    if len(threshold.normalize().as_tuple().digits) > ERROR_SIGNIFICANT_DIGITS:
        raise ProfileError(
            f"{where}: max_cnot_error {value!r} has more than "
            f"{ERROR_SIGNIFICANT_DIGITS} significant digits"
        )
    return threshold


def _count(table: Mapping[str, Any], key: str, where: str) -> int:
    value = table.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProfileError(f"{where}: {key} must be an integer, got {value!r}")
    return value


def _text(table: Mapping[str, Any], key: str, where: str) -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ProfileError(f"{where}: {key} must be a non-empty string")
    return value


def _reject_unknown(table: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ProfileError(f"{where}: unknown key(s) {', '.join(unknown)}")


def classify(
    profile: ExportProfile, num_qubits: int, two_qubit_error: float | None
) -> Classification:
    """Classify a device from its attested qubit count and C-NOT error (None: not reported).

    Raises ValueError for impossible inputs (negative qubit count; an error that is NaN,
    infinite or outside [0, 1]): a calibration like that should be refused, not classified.
    """
    if isinstance(num_qubits, bool) or not isinstance(num_qubits, int) or num_qubits < 0:
        raise ValueError(f"num_qubits must be a non-negative integer, got {num_qubits!r}")
    error = None if two_qubit_error is None else reported_error(two_qubit_error)
    band = profile.band_for(num_qubits)
    if band is None:
        return Classification(
            export_class=profile.uncontrolled_class,
            band=None,
            reason=f"{profile.uncontrolled_class}: {num_qubits} physical qubits is in no "
            f"controlled band of {profile.name}",
        )
    controlled = profile.controlled_class
    if band.max_cnot_error is None:
        why = "controlled at any C-NOT error"
    elif error is None:
        why = (
            "C-NOT error is unknown, so it is classified as controlled conservatively until a "
            f"calibration reports it (threshold {band.max_cnot_error})"
        )
    elif error <= band.max_cnot_error:
        why = f"C-NOT error {error} is at or below {band.max_cnot_error}"
    else:
        return Classification(
            export_class=profile.uncontrolled_class,
            band=None,
            reason=f"{profile.uncontrolled_class}: {num_qubits} physical qubits is in band "
            f"{band.label} but C-NOT error {error} is above its threshold {band.max_cnot_error}",
        )
    unverified = "" if band.verified else "; this band is unverified: operators must confirm it"
    return Classification(
        export_class=controlled,
        band=band,
        reason=f"{controlled}: {num_qubits} physical qubits is in band {band.label} and {why} "
        f"({band.source}){unverified}",
    )


def reported_error(value: float) -> Decimal:
    """The decimal a reported C-NOT error stands for (see the module docstring)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"two_qubit_error must be a number, got {value!r}")
    if not math.isfinite(value) or not 0 <= value <= 1:
        raise ValueError(f"two_qubit_error must be within [0, 1], got {value!r}")
    return _ERROR_CONTEXT.create_decimal(repr(float(value))).normalize(_ERROR_CONTEXT)


def crossing(old: Classification | None, new: Classification) -> str | None:
    """Describe a change of class or band for the audit log and metrics; None if unchanged.

    ``old`` None means the device had no classification yet: its first one is always reported,
    so that it is audited; callers counting crossings in a metric may skip that case.
    """
    if old is not None and old.export_class == new.export_class and old.band == new.band:
        return None
    before = "unclassified" if old is None else _summary(old)
    return f"export class changed from {before} to {_summary(new)}: {new.reason}"


def _summary(classification: Classification) -> str:
    if classification.band is None:
        return classification.export_class
    return f"{classification.export_class} ({classification.band.describe()})"


def _range_label(low: int, high: int | None) -> str:
    return f"{low}+" if high is None else f"{low}-{high}"
