"""The anomaly detectors on synthetic traffic: each fires on its anomaly, and a normal workload
(seeded, so the figures in docs/anomalies.md are reproducible) stays under its stated
false-positive rate."""

from __future__ import annotations

import numpy as np
import pytest
from qiskit.quantum_info import hellinger_fidelity as qiskit_hellinger

from broker.anomaly.detectors import (
    DENIAL_BURST,
    SUBMISSION_RATE_SPIKE,
    SUBMISSION_VOLUME_SPIKE,
    BurstDetector,
    Measured,
    MeasurementDriftDetector,
    RateSpikeDetector,
    hellinger_fidelity,
)
from broker.anomaly.monitor import submission_watch
from broker.jobs.submit import MAX_BATCH
from broker.jobs.usage import _covered
from broker.settings import AnomalySettings
from tests.unit.anomaly_workloads import FLOODS, measure

DEFAULTS = AnomalySettings()
DAY_WINDOWS = 1440  # one day of 60 s windows


def _rate() -> RateSpikeDetector:
    return RateSpikeDetector(
        window=DEFAULTS.rate_window_seconds,
        sigmas=DEFAULTS.rate_sigmas,
        floor=DEFAULTS.rate_floor,
        smoothing=DEFAULTS.rate_smoothing,
    )


def _feed(detector: RateSpikeDetector, key: str, counts: list[int], start: float = 0.0) -> int:
    """Spread each window's count evenly over that window; return how many findings fired."""
    fired = 0
    window = detector.window
    for n, count in enumerate(counts):
        for i in range(count):
            at = start + n * window + (i + 0.5) * window / max(count, 1)
            fired += detector.observe(key, at) is not None
    return fired


def normal_rate_false_positives(seed: int = 7) -> tuple[int, int]:
    """(findings, principal-windows) over a day of Poisson traffic for 30 principals whose
    usual rates range from 0.2 to 45 submissions a minute, with a 3x afternoon peak."""
    rng = np.random.default_rng(seed)
    detector = _rate()
    findings = 0
    rates = np.linspace(0.2, 45.0, 30)
    hours = np.arange(DAY_WINDOWS) / 60.0
    shape = 1.0 + 2.0 * np.exp(-(((hours - 15.0) / 2.0) ** 2))  # a smooth 3x peak at 15:00
    for index, rate in enumerate(rates):
        counts = rng.poisson(rate * shape / shape.max() * 1.0).tolist()
        findings += _feed(detector, f"p{index}", counts)
    return findings, len(rates) * DAY_WINDOWS


def test_rate_spike_normal_day_raises_nothing() -> None:
    findings, windows = normal_rate_false_positives()
    assert windows == 43_200
    assert findings == 0  # stated in docs/anomalies.md: 0 in 43,200 principal-windows


def test_a_100_circuit_sweep_by_a_new_principal_raises_nothing() -> None:
    """Issue 14: one SubmitJobs call of 100 circuits is one submission call of 100 jobs."""
    watch = submission_watch(DEFAULTS)
    assert watch.observe("newcomer", 10.0, MAX_BATCH) == []
    # A 2-D sweep, five full batches back to back, and a second sweep after a coffee: quiet.
    assert [f for n in range(5) for f in watch.observe("newcomer", 20.0 + 3 * n, 100)] == []
    assert [f for n in range(5) for f in watch.observe("newcomer", 900.0 + 3 * n, 100)] == []
    # Counted per job, as before, the first sweep alone passed the floor of the rate detector.
    per_job = _rate()
    assert any(per_job.observe("newcomer", 10.0) for _ in range(MAX_BATCH))


def test_a_flood_of_single_calls_by_a_new_principal_fires_the_rate_detector() -> None:
    watch = submission_watch(DEFAULTS)
    findings = [f for n in range(300) for f in watch.observe("flooder", n * 0.2, 1)]
    assert [f.detector for f in findings] == [SUBMISSION_RATE_SPIKE]
    assert findings[0].detail["count"] == DEFAULTS.rate_floor + 1
    assert findings[0].detail["baseline"] == "facility prior"


def test_full_batches_back_to_back_fire_the_volume_detector_not_the_rate_one() -> None:
    watch = submission_watch(DEFAULTS)
    findings = [f for n in range(40) for f in watch.observe("flooder", n * 1.5, MAX_BATCH)]
    assert [f.detector for f in findings] == [SUBMISSION_VOLUME_SPIKE]
    assert findings[0].detail["count"] == DEFAULTS.volume_floor + MAX_BATCH
    assert findings[0].detail["unit"] == "jobs"


def test_a_flood_straddling_a_window_boundary_still_fires() -> None:
    """40 calls in the last 20 s of one window and 40 in the first 20 s of the next: neither
    window holds 61, the last minute does."""
    detector = _rate()
    assert detector.observe("p", 0.0) is None  # windows of p start here
    fired = [detector.observe("p", 40.0 + n * 0.5) for n in range(80)]
    findings = [f for f in fired if f is not None]
    assert len(findings) == 1
    # The count is the estimate for the last minute (the previous window's share prorated).
    assert DEFAULTS.rate_floor < findings[0].detail["count"] <= 81


def test_a_newcomer_is_judged_against_the_facility_prior_which_floods_do_not_teach() -> None:
    detector = RateSpikeDetector(window=60.0, sigmas=4.0, floor=10, smoothing=0.2)
    assert detector.threshold("new") == 10  # no facility history: the floor
    for p in range(20):  # twenty established principals, 30 calls a minute each
        _feed(detector, f"busy{p}", [30] * 10)
    prior = detector.threshold("new")
    assert 50 < prior < 60  # 30 + 4 x sqrt(30): what principals here do in a minute
    assert detector.threshold("busy0") == pytest.approx(prior, rel=0.05)
    # A flood by someone new fires against that prior, and its window teaches the prior nothing.
    assert _feed(detector, "mallory", [500, 0], start=20 * 60.0) == 1
    assert detector.threshold("new") == prior


def test_rate_spike_fires_once_on_a_burst_against_the_principals_own_baseline() -> None:
    detector = _rate()
    assert _feed(detector, "alice", [5] * 30) == 0
    start = 30 * detector.window + 10.0  # windows start at alice's first submission (6 s)
    fired = [detector.observe("alice", start + i * 0.1) for i in range(200)]
    findings = [f for f in fired if f is not None]
    assert len(findings) == 1
    assert findings[0].detector == SUBMISSION_RATE_SPIKE
    assert findings[0].subject == "alice"
    assert findings[0].detail["count"] == DEFAULTS.rate_floor + 1


def test_realistic_researcher_workloads_raise_nothing_and_planted_floods_are_caught() -> None:
    """Two simulated days of sweeps, sessions, interactive users and pipelines (seed 0; the
    ten-seed week in docs/anomalies.md comes from `python -m tests.unit.anomaly_workloads`)."""
    figures = measure(range(1), DEFAULTS, days=2)
    assert figures.identity_days == 80
    assert figures.false_positives == {}
    assert figures.missed == {}
    assert {name: len(delays) for name, delays in figures.detected.items()} == dict.fromkeys(
        FLOODS, 2
    )
    assert all(delay < 60.0 for delays in figures.detected.values() for delay in delays)


def test_a_habitually_busy_principal_is_judged_by_its_own_baseline() -> None:
    detector = _rate()
    # Its very first window is above the floor with no history yet: that one alarms...
    assert _feed(detector, "batch", [120] * 30) == 1
    # ...and from then on its usual rate is quiet, while a real jump still fires.
    assert detector.threshold("batch") > 150
    assert _feed(detector, "batch", [120] * 30, start=30 * detector.window) == 0
    assert _feed(detector, "batch", [400], start=60 * detector.window) == 1


def test_denial_bursts_fire_once_per_burst_and_rearm() -> None:
    detector = BurstDetector(DENIAL_BURST, window=300.0, threshold=10)
    fired = [detector.observe("mallory", float(i)) for i in range(30)]
    assert [i for i, f in enumerate(fired) if f is not None] == [9]
    # A quiet spell lets the window empty; the next burst is a new finding.
    again = [detector.observe("mallory", 1000.0 + i) for i in range(10)]
    assert [i for i, f in enumerate(again) if f is not None] == [9]


def test_denial_bursts_normal_traffic_false_positive_rate() -> None:
    """Researchers mistype or lack training now and then: one denial per 20 minutes on
    average each, 50 principals, one day."""
    rng = np.random.default_rng(11)
    detector = BurstDetector(
        DENIAL_BURST, window=DEFAULTS.denial_window_seconds, threshold=DEFAULTS.denial_threshold
    )
    findings = 0
    for p in range(50):
        times = np.cumsum(rng.exponential(1200.0, size=200))
        findings += sum(detector.observe(f"p{p}", float(t)) is not None for t in times if t < 86400)
    assert findings == 0


def test_measurement_drift_needs_a_change_without_a_reference_update() -> None:
    detector = MeasurementDriftDetector()

    def seen(firmware: str, reference: str) -> Measured:
        return Measured(measurements=(("firmware", firmware),), reference=reference)

    assert detector.observe("dev", seen("fw-1", "device:dev:v1")) is None
    assert detector.observe("dev", seen("fw-1", "device:dev:v1")) is None
    finding = detector.observe("dev", seen("fw-2", "device:dev:v1"))
    assert finding is not None
    assert finding.detail["changed"] == ["firmware"]
    assert finding.detail["before"] == {"firmware": "fw-1"}
    # A matching update (a new reference version) makes the next change expected.
    assert detector.observe("dev", seen("fw-3", "device:dev:v2")) is None
    assert detector.observe("other", seen("fw-9", "device:dev:v2")) is None


@pytest.mark.parametrize("seed", range(20))
def test_hellinger_fidelity_matches_qiskits(seed: int) -> None:
    rng = np.random.default_rng(seed)
    keys = ["000", "001", "110", "111"]
    counts = {k: int(v) for k, v in zip(keys, rng.integers(0, 500, size=4), strict=True)}
    if sum(counts.values()) == 0:
        counts["000"] = 1
    ideal = {"000": 0.5, "111": 0.5}
    expected = qiskit_hellinger(counts, {k: int(v * 1000) for k, v in ideal.items()})
    assert hellinger_fidelity(counts, ideal) == pytest.approx(expected, abs=1e-12)


def test_hellinger_fidelity_edges() -> None:
    ideal = {"00": 0.5, "11": 0.5}
    assert hellinger_fidelity({"00": 500, "11": 500}, ideal) == pytest.approx(1.0)
    assert hellinger_fidelity({"01": 500, "10": 500}, ideal) == 0.0
    assert hellinger_fidelity({}, ideal) == 0.0


def test_busy_time_is_the_union_of_overlapping_intervals() -> None:
    assert _covered([(0, 10), (5, 15), (20, 25)], 0, 30) == 20
    assert _covered([(-10, 5)], 0, 30) == 5
    assert _covered([(0, 100)], 10, 20) == 10
    assert _covered([], 0, 10) == 0
