"""Export-control classification: the shipped 4A906.a profile at every band edge, profile
validation, unknown errors classified conservatively, and band-crossing descriptions.

Thresholds are decimals: an error reported as exactly the threshold (1e-4 written as a float)
must be controlled, one a hair above must not, and float noise must never lift a device out of
control.
"""

from __future__ import annotations

import math
from decimal import Decimal
from pathlib import Path

import pytest

from broker.policy.export_control import (
    DEFAULT_PROFILE,
    Classification,
    ExportProfile,
    ProfileError,
    classify,
    crossing,
    load_profile,
    reported_error,
)

ROOT = Path(__file__).resolve().parents[2]
CONTROLLED = "4A906.a"
UNCONTROLLED = "EAR99"
ANY = "any"

# Every band edge of the shipped profile, with the threshold of the band the count falls in
# (None: in no band). The pairs 33/34, 99/100, 199/200 and 349/350 are the verified edges.
EDGES: list[tuple[int, str | None]] = [
    (33, None),
    (34, "1e-4"),
    (99, "1e-4"),
    (100, "1e-3"),
    (199, "1e-3"),
    (200, "2e-3"),
    (349, "2e-3"),
    (350, "3e-3"),
    (499, "3e-3"),
    (500, "4e-3"),
    (699, "4e-3"),
    (700, "5e-3"),
    (1099, "5e-3"),
    (1100, "6e-3"),
    (1999, "6e-3"),
    (2000, ANY),
]
THRESHOLDS = sorted({t for _, t in EDGES if t not in (None, ANY)}, key=Decimal)


@pytest.fixture(scope="module")
def profile() -> ExportProfile:
    return load_profile(DEFAULT_PROFILE)


def _just_above(threshold: str) -> float:
    return float(Decimal(threshold) * Decimal("1.000000001"))


def _just_below(threshold: str) -> float:
    return float(Decimal(threshold) * Decimal("0.999999999"))


def _edge_cases() -> list[tuple[int, float, bool]]:
    """(qubits, error, controlled?) at, above and below every threshold, on both sides of edges."""
    cases: list[tuple[int, float, bool]] = []
    for qubits, own in EDGES:
        for threshold in THRESHOLDS:
            if own is None:
                expected = [False, False, False]
            elif own == ANY:
                expected = [True, True, True]
            else:
                rank = Decimal(threshold).compare(Decimal(own))
                at_ok = rank <= 0
                expected = [at_ok, rank < 0, at_ok]
            errors = [float(threshold), _just_above(threshold), _just_below(threshold)]
            cases.extend(zip([qubits] * 3, errors, expected, strict=True))
    return cases


def test_default_profile_resolves_to_the_shipped_file_in_a_checkout() -> None:
    assert DEFAULT_PROFILE == ROOT / "deploy" / "policy" / "export-control-4A906.toml"
    assert DEFAULT_PROFILE.is_file()


def test_shipped_profile_states_source_classes_and_inputs(profile: ExportProfile) -> None:
    assert "89 FR 72926" in profile.source
    assert "6 September 2024" in profile.source
    assert (profile.controlled_class, profile.uncontrolled_class) == (CONTROLLED, UNCONTROLLED)
    assert "fully controlled, connected and working physical qubits" in profile.qubits_definition
    assert "two-qubit" in profile.error_definition
    assert "nearest-neighbour C-NOT" in profile.error_definition


def test_shipped_profile_marks_only_the_published_bands_verified(profile: ExportProfile) -> None:
    table = [(b.label, b.max_cnot_error, b.verified) for b in profile.bands]
    assert table == [
        ("34-99", Decimal("1e-4"), True),
        ("100-199", Decimal("1e-3"), True),
        ("200-349", Decimal("2e-3"), True),
        ("350-499", Decimal("3e-3"), False),
        ("500-699", Decimal("4e-3"), False),
        ("700-1099", Decimal("5e-3"), False),
        ("1100-1999", Decimal("6e-3"), False),
        ("2000+", None, False),
    ]
    assert "operators must confirm" in DEFAULT_PROFILE.read_text(encoding="utf-8")


@pytest.mark.parametrize(("qubits", "error", "controlled"), _edge_cases())
def test_every_band_edge_at_above_and_below_each_threshold(
    profile: ExportProfile, qubits: int, error: float, controlled: bool
) -> None:
    result = classify(profile, qubits, error)
    assert result.export_class == (CONTROLLED if controlled else UNCONTROLLED)
    if controlled:
        assert result.band is not None
        assert result.band.contains(qubits)
    else:
        assert result.band is None


@pytest.mark.parametrize(
    ("qubits", "error", "controlled"),
    [
        (33, 0.0, False),
        (34, 1e-4, True),
        (34, 0.00010001, False),
        (34, 0.00009999, True),
        (99, 1e-4, True),
        (99, 1e-3, False),
        (100, 1e-3, True),
        (100, 0.0010001, False),
        (199, 1e-3, True),
        (199, 2e-3, False),
        (200, 2e-3, True),
        (200, 0.0020001, False),
        (349, 2e-3, True),
        (349, 3e-3, False),
        (350, 3e-3, True),
        (350, 0.0030001, False),
    ],
)
def test_verified_edges_written_out(
    profile: ExportProfile, qubits: int, error: float, controlled: bool
) -> None:
    result = classify(profile, qubits, error)
    assert result.export_class == (CONTROLLED if controlled else UNCONTROLLED)


@pytest.mark.parametrize("threshold", THRESHOLDS)
def test_float_neighbours_of_a_threshold_count_as_on_it(
    profile: ExportProfile, threshold: str
) -> None:
    band = next(b for b in profile.bands if b.max_cnot_error == Decimal(threshold))
    exact = float(threshold)
    for error in (math.nextafter(exact, 1.0), math.nextafter(exact, 0.0)):
        assert classify(profile, band.min_qubits, error).export_class == CONTROLLED
    assert reported_error(exact) == Decimal(threshold)


def test_float_noise_cannot_lift_a_device_out_of_control(profile: ExportProfile) -> None:
    noisy = 1 - 0.999  # 0.0010000000000000009 as a float
    assert noisy > 1e-3
    result = classify(profile, 150, noisy)
    assert result.export_class == CONTROLLED
    assert "0.001 is at or below 0.001" in result.reason


def test_threshold_zero_and_one_are_inclusive(tmp_path: Path) -> None:
    path = _write(tmp_path, _band(1, 9, "0.0") + _band(10, 19, "1.0"))
    edges = load_profile(path)
    assert classify(edges, 5, 0.0).export_class == "CONTROLLED"
    assert classify(edges, 5, 5e-324).export_class == "UNCONTROLLED"
    assert classify(edges, 15, 1.0).export_class == "CONTROLLED"


def test_reasons_explain_the_decision(profile: ExportProfile) -> None:
    inside = classify(profile, 150, 5e-4)
    assert inside.reason.startswith(CONTROLLED)
    assert "band 100-199" in inside.reason
    assert "0.0005 is at or below 0.001" in inside.reason
    assert "89 FR 72926" in inside.reason
    assert "unverified" not in inside.reason

    above = classify(profile, 150, 2e-3)
    assert above.reason.startswith(UNCONTROLLED)
    assert "above its threshold 0.001" in above.reason

    outside = classify(profile, 33, 0.0)
    assert "in no controlled band" in outside.reason

    unverified = classify(profile, 400, 1e-3)
    assert unverified.export_class == CONTROLLED
    assert "unverified: operators must confirm" in unverified.reason


@pytest.mark.parametrize("qubits", [34, 99, 100, 199, 200, 349, 350, 1999])
def test_unknown_error_in_a_band_is_controlled_conservatively(
    profile: ExportProfile, qubits: int
) -> None:
    result = classify(profile, qubits, None)
    assert result.export_class == CONTROLLED
    assert result.band is not None
    assert result.band.contains(qubits)
    assert "unknown" in result.reason
    assert "conservatively" in result.reason


@pytest.mark.parametrize("qubits", [0, 1, 33])
def test_unknown_error_outside_every_band_is_uncontrolled(
    profile: ExportProfile, qubits: int
) -> None:
    result = classify(profile, qubits, None)
    assert result.export_class == UNCONTROLLED
    assert result.band is None


def test_band_without_threshold_is_controlled_at_any_error(profile: ExportProfile) -> None:
    for error in (None, 0.0, 0.5, 1.0):
        result = classify(profile, 2000, error)
        assert result.export_class == CONTROLLED
        assert result.band is not None
        assert result.band.label == "2000+"
    assert classify(profile, 10**6, 1.0).export_class == CONTROLLED


@pytest.mark.parametrize(
    ("qubits", "error"),
    [(-1, 1e-4), (50, math.nan), (50, math.inf), (50, -1e-9), (50, 1.5), (True, 1e-4)],
)
def test_impossible_inputs_are_refused(profile: ExportProfile, qubits: int, error: float) -> None:
    with pytest.raises(ValueError, match=r"num_qubits|two_qubit_error"):
        classify(profile, qubits, error)


# ---- profile validation ---------------------------------------------------------------------

HEADER = """\
schema_version = 1
name = "test"
source = "test source"
controlled_class = "CONTROLLED"
uncontrolled_class = "UNCONTROLLED"

[inputs]
num_qubits = "working physical qubits"
two_qubit_error = "average C-NOT error"
"""


def _band(low: int, high: int | None, error: str | None, extra: str = "") -> str:
    lines = ["", "[[bands]]", f"min_qubits = {low}"]
    if high is not None:
        lines.append(f"max_qubits = {high}")
    if error is not None:
        lines.append(f"max_cnot_error = {error}")
    lines.append('source = "test"')
    if extra:
        lines.append(extra)
    return "\n".join(lines) + "\n"


def _write(tmp_path: Path, bands: str, header: str = HEADER) -> Path:
    path = tmp_path / "profile.toml"
    path.write_text(header + bands, encoding="utf-8")
    return path


def test_a_minimal_profile_loads(tmp_path: Path) -> None:
    profile = load_profile(_write(tmp_path, _band(10, 20, "1e-3") + _band(30, None, None)))
    assert [b.label for b in profile.bands] == ["10-20", "30+"]
    assert profile.bands[0].verified is False
    assert classify(profile, 25, 0.0).export_class == "UNCONTROLLED"  # gaps are allowed


def test_missing_threshold_means_any_error(tmp_path: Path) -> None:
    profile = load_profile(_write(tmp_path, _band(10, 20, None)))
    assert profile.bands[0].max_cnot_error is None
    for error in (None, 0.0, 0.999, 1.0):
        assert classify(profile, 15, error).export_class == "CONTROLLED"


def test_quoted_and_float_thresholds_are_the_same_decimal(tmp_path: Path) -> None:
    quoted = load_profile(_write(tmp_path, _band(10, 20, '"1e-4"')))
    floated = load_profile(_write(tmp_path, _band(10, 20, "0.0001")))
    assert quoted.bands == floated.bands
    assert classify(quoted, 10, 1e-4).export_class == "CONTROLLED"
    assert classify(quoted, 10, 0.00010001).export_class == "UNCONTROLLED"


@pytest.mark.parametrize(
    ("bands", "message"),
    [
        (_band(10, 20, "1e-3") + _band(20, 30, "1e-3"), r"band 2 \(20-30 qubits\).*overlap"),
        (_band(10, 20, "1e-3") + _band(5, 8, "1e-3"), r"band 2 \(5-8 qubits\).*ascending"),
        (_band(10, None, "1e-3") + _band(50, 60, "1e-3"), r"band 2 \(50-60 qubits\).*last band"),
        (_band(20, 10, "1e-3"), r"band 1.*max_qubits 10 is below min_qubits 20"),
        (_band(0, 10, "1e-3"), r"band 1.*at least 1"),
        (_band(10, 20, "1.5"), r"band 1 \(10-20 qubits\): max_cnot_error 1.5 is outside \[0, 1\]"),
        (_band(10, 20, "-1e-4"), r"band 1 \(10-20 qubits\).*outside \[0, 1\]"),
        (_band(10, 20, "nan"), r"band 1 \(10-20 qubits\).*outside \[0, 1\]"),
        (_band(10, 20, '"lots"'), r"band 1 \(10-20 qubits\).*not a number"),
        (_band(10, 20, "true"), r"band 1 \(10-20 qubits\).*must be a number"),
        (_band(10, 20, '"0.1234567890123"'), r"band 1 \(10-20 qubits\).*significant digits"),
        (_band(10, 20, "1e-3", "max_eror = 1e-3"), r"band 1: unknown key\(s\) max_eror"),
        (_band(10, 20, "1e-3", 'verified = "yes"'), r"band 1 \(10-20 qubits\).*verified"),
        (_band(10, 20, "1e-3").replace("= 10", "= 10.5"), r"band 1: min_qubits must be an int"),
        ("", r"at least one \[\[bands\]\]"),
    ],
)
def test_invalid_bands_are_refused_naming_the_band(
    tmp_path: Path, bands: str, message: str
) -> None:
    path = _write(tmp_path, bands)
    with pytest.raises(ProfileError, match=message) as caught:
        load_profile(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (HEADER.replace("schema_version = 1", "schema_version = 2"), "schema_version"),
        (HEADER.replace('"UNCONTROLLED"', '"CONTROLLED"'), "must differ"),
        (HEADER.replace('name = "test"\n', ""), "name must be a non-empty string"),
        (HEADER.split("[inputs]")[0], r"missing \[inputs\]"),
        (HEADER.replace("num_qubits =", "qubits ="), r"\[inputs\]: unknown key"),
        (HEADER + 'colour = "blue"\n', "unknown key"),
    ],
)
def test_invalid_profile_headers_are_refused(tmp_path: Path, header: str, message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        load_profile(_write(tmp_path, _band(10, 20, "1e-3"), header=header))


def test_unreadable_profiles_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="cannot read"):
        load_profile(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("bands = [", encoding="utf-8")
    with pytest.raises(ProfileError, match="cannot read"):
        load_profile(broken)


# ---- crossings ------------------------------------------------------------------------------


def test_first_classification_is_reported(profile: ExportProfile) -> None:
    described = crossing(None, classify(profile, 50, 1e-4))
    assert described is not None
    assert described.startswith("export class changed from unclassified to 4A906.a (band 34-99")


def test_no_crossing_while_class_and_band_stay(profile: ExportProfile) -> None:
    assert crossing(classify(profile, 50, 1e-4), classify(profile, 60, 5e-5)) is None
    assert crossing(classify(profile, 50, 1e-2), classify(profile, 20, 0.0)) is None
    assert crossing(classify(profile, 50, None), classify(profile, 50, 9e-5)) is None


def test_crossing_out_of_control_when_error_degrades(profile: ExportProfile) -> None:
    old = classify(profile, 150, 1e-3)
    new = classify(profile, 150, 0.0010001)
    described = crossing(old, new)
    assert described is not None
    assert "from 4A906.a (band 100-199 qubits, C-NOT error <= 0.001) to EAR99" in described
    assert "above its threshold 0.001" in described


def test_crossing_into_control_when_error_improves(profile: ExportProfile) -> None:
    old = classify(profile, 150, 0.0010001)
    new = classify(profile, 150, 1e-3)
    described = crossing(old, new)
    assert described is not None
    assert "from EAR99 to 4A906.a (band 100-199 qubits, C-NOT error <= 0.001)" in described


def test_crossing_between_controlled_bands(profile: ExportProfile) -> None:
    old = classify(profile, 99, 1e-4)
    new = classify(profile, 100, 1e-4)
    described = crossing(old, new)
    assert described is not None
    assert "from 4A906.a (band 34-99 qubits" in described
    assert "to 4A906.a (band 100-199 qubits" in described
    back = crossing(new, old)
    assert back is not None
    assert "from 4A906.a (band 100-199 qubits" in back


def test_crossing_when_a_known_error_replaces_an_unknown_one(profile: ExportProfile) -> None:
    conservative = classify(profile, 50, None)
    measured = classify(profile, 50, 2e-4)
    assert crossing(conservative, measured) is not None
    assert crossing(measured, conservative) is not None


def test_classification_is_a_value(profile: ExportProfile) -> None:
    first = classify(profile, 50, 1e-4)
    assert first == classify(profile, 50, 1e-4)
    assert isinstance(first, Classification)
    with pytest.raises(AttributeError):
        first.export_class = UNCONTROLLED  # type: ignore[misc]
