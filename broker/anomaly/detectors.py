"""The anomaly detectors: small state machines fed with events and a time, no I/O.

Each returns a `Finding` when it fires and None otherwise; the monitor (`broker.anomaly.monitor`)
turns findings into a metric, an audit entry and a log line. Every method is documented with
its false-positive figure in docs/anomalies.md, and the figures are measured by the unit tests.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

# Detector names: the `detector` label of qtestbed_anomalies_total and the alert rules.
SUBMISSION_RATE_SPIKE = "submission_rate_spike"  # submission calls (a batch is one)
SUBMISSION_VOLUME_SPIKE = "submission_volume_spike"  # jobs, summed over a window's batches
DENIAL_BURST = "denial_burst"
ATTESTATION_FAILURE_BURST = "attestation_failure_burst"
ATTESTATION_FAILURE_BURST_FACILITY = "attestation_failure_burst_facility"
MEASUREMENT_DRIFT = "measurement_drift"
CANARY_FIDELITY_LOW = "canary_fidelity_low"
EXPORT_CLASS_CROSSING = "export_class_crossing"
FRONT_DOOR_REFUSAL_BURST = "front_door_refusal_burst"
# Detectors whose findings carry a device label (the rest are about principals or the facility).
DEVICE_DETECTORS = (
    ATTESTATION_FAILURE_BURST,
    MEASUREMENT_DRIFT,
    CANARY_FIDELITY_LOW,
    EXPORT_CLASS_CROSSING,
)

# Past this many idle windows a baseline has decayed to nothing anyway; stop iterating.
_MAX_IDLE_WINDOWS = 64


@dataclass(frozen=True, kw_only=True, slots=True)
class Finding:
    """One anomaly: which detector, about what, and the numbers that made it fire."""

    detector: str
    device: str = ""  # the device label ("" for principal and facility findings)
    subject: str = ""  # principal or device the finding is about
    message: str
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class _Baseline:
    """An exponentially weighted mean and variance of per-window counts."""

    mean: float = 0.0
    variance: float = 0.0
    windows: int = 0  # windows learned so far

    def learn(self, count: float, smoothing: float) -> None:
        """EWMA update of mean and variance (West 1979, incremental form)."""
        if self.windows == 0:
            self.mean, self.variance = float(count), 0.0
        else:
            delta = count - self.mean
            self.mean += smoothing * delta
            self.variance = (1 - smoothing) * (self.variance + smoothing * delta**2)
        self.windows += 1


@dataclass(slots=True)
class _Window:
    """One key's current window, the one before, and its own baseline (None until its first
    window ends)."""

    window_start: float
    count: int = 0
    previous: int = 0  # the count of the window just before, if it was the last one
    fired: bool = False
    own: _Baseline | None = None
    # What this window is judged against: the own baseline as it was before the previous
    # window, which the recent estimate overlaps, so the unreported first half of a flood
    # cannot raise the bar for its second half. None: the facility prior.
    judge: _Baseline | None = None

    def recent(self, now: float, window: float) -> float:
        """Events in the last `window` seconds, estimated: this window's count plus the share
        of the previous window's count that still lies within the last `window` seconds (as if
        spread evenly). A flood that straddles a window boundary is not halved."""
        behind = max(0.0, 1.0 - (now - self.window_start) / window)
        return self.count + self.previous * behind


class RateSpikeDetector:
    """Per-key events (or amounts: jobs) per fixed window against that key's own history.

    The baseline is an exponentially weighted mean and variance of past windows' counts
    (idle windows count as zero). A window fires once, as soon as the events of the last
    window length (this window's count and the overlapping share of the previous one) exceed
    max(floor, mean + sigmas * max(stddev, sqrt(mean))): the floor keeps a quiet principal's
    first busy minute from alarming, the baseline lets a habitually busy one stay busy.

    A key without history of its own (a new principal) is judged against the facility prior:
    the same EWMA over every key's completed windows that had activity and did not alarm, so a
    newcomer may do what active principals here usually do in a window, and never less than
    the floor. Its own baseline starts from that prior when its first window ends. Windows
    that alarmed never teach the prior, so a flood cannot raise the bar for the next newcomer.
    """

    def __init__(
        self,
        *,
        window: float,
        sigmas: float,
        floor: int,
        smoothing: float,
        detector: str = SUBMISSION_RATE_SPIKE,
        unit: str = "submission calls",
    ) -> None:
        self.window = window
        self.sigmas = sigmas
        self.floor = floor
        self.smoothing = smoothing
        self.detector = detector
        self.unit = unit
        self.prior = _Baseline()
        self._state: dict[Hashable, _Window] = {}

    def threshold(self, key: Hashable) -> float:
        state = self._state.get(key)
        baseline = state.judge if state is not None and state.judge is not None else self.prior
        return self._limit(baseline)

    def _limit(self, baseline: _Baseline) -> float:
        if baseline.windows == 0:
            return float(self.floor)
        # Counts of independent arrivals are at least Poisson-noisy: never trust a spread below
        # sqrt(mean), or a perfectly regular batch job would alarm one submission above usual.
        spread = max(math.sqrt(baseline.variance), math.sqrt(max(baseline.mean, 0.0)))
        return max(float(self.floor), baseline.mean + self.sigmas * spread)

    def count(self, key: Hashable) -> int:
        """Events of `key` in its current window (0 for a key never seen)."""
        state = self._state.get(key)
        return state.count if state is not None else 0

    def observe(self, key: Hashable, now: float, amount: int = 1) -> Finding | None:
        state = self._state.get(key)
        if state is None:
            state = self._state[key] = _Window(window_start=now)
        self._roll(state, now)
        state.count += amount
        judge = state.judge
        usual = judge if judge is not None else self.prior
        limit = self._limit(usual)
        recent = state.recent(now, self.window)
        if state.fired or recent <= limit:
            return None
        state.fired = True
        count = math.ceil(recent)
        whose = "their usual" if judge is not None else "the facility prior (no history of theirs)"
        return Finding(
            detector=self.detector,
            subject=str(key),
            message=f"{key} made {count} {self.unit} within {self.window:.0f} s; {whose} "
            f"rate is {usual.mean:.1f} per window (alarm above {limit:.1f})",
            detail={
                "count": count,
                "unit": self.unit,
                "window_seconds": self.window,
                "baseline": "own" if judge is not None else "facility prior",
                "baseline_mean": round(usual.mean, 3),
                "baseline_stddev": round(math.sqrt(usual.variance), 3),
                "threshold": round(limit, 3),
            },
        )

    def _roll(self, state: _Window, now: float) -> None:
        elapsed = int((now - state.window_start) // self.window)
        if elapsed <= 0:
            return
        before = None if state.own is None else replace(state.own)
        reported = state.fired  # a window that alarmed was reported: it may raise the bar
        if state.own is None:  # a newcomer's own history starts from the facility prior
            state.own = _Baseline(self.prior.mean, self.prior.variance, self.prior.windows)
        if state.count > 0 and not state.fired:
            self.prior.learn(state.count, self.smoothing)
        for n in range(min(elapsed, _MAX_IDLE_WINDOWS)):
            state.own.learn(state.count if n == 0 else 0, self.smoothing)
        state.judge = before if elapsed == 1 and not reported else replace(state.own)
        state.window_start += elapsed * self.window
        state.previous = state.count if elapsed == 1 else 0
        state.count = 0
        state.fired = False


class SubmissionWatch:
    """Accepted submission calls: each call feeds the call-rate detector once, whatever its
    size, and its size (the jobs it queued) feeds the job-volume detector."""

    def __init__(self, *, rate: RateSpikeDetector, volume: RateSpikeDetector) -> None:
        self.rate = rate
        self.volume = volume

    def observe(self, principal: Hashable, now: float, jobs: int) -> list[Finding]:
        if jobs <= 0:  # a retry that only named earlier jobs submitted nothing
            return []
        found = (self.rate.observe(principal, now), self.volume.observe(principal, now, jobs))
        return [f for f in found if f is not None]


class BurstDetector:
    """Fires when `threshold` events for one key fall within a sliding `window`.

    It fires once per burst and re-arms when the window holds fewer than half the threshold,
    so a sustained attack raises one finding per burst, not one per event.
    """

    def __init__(self, detector: str, *, window: float, threshold: int) -> None:
        self.detector = detector
        self.window = window
        self.threshold = threshold
        self._events: dict[Hashable, deque[float]] = {}
        self._armed: dict[Hashable, bool] = {}

    def observe(self, key: Hashable, now: float, *, device: str = "") -> Finding | None:
        events = self._events.setdefault(key, deque(maxlen=self.threshold))
        events.append(now)
        while events and events[0] <= now - self.window:
            events.popleft()
        armed = self._armed.get(key, True)
        if not armed and len(events) < max(1, self.threshold // 2):
            armed = True
        if armed and len(events) >= self.threshold:
            self._armed[key] = False
            return Finding(
                detector=self.detector,
                device=device,
                subject=str(key),
                message=f"{len(events)} events for {key} within {self.window:.0f} s "
                f"(alarm at {self.threshold})",
                detail={"count": len(events), "window_seconds": self.window},
            )
        self._armed[key] = armed
        return None


@dataclass(frozen=True, kw_only=True, slots=True)
class Measured:
    """What a device reported, and which reference values it was appraised against."""

    measurements: tuple[tuple[str, str], ...]  # (name, value) pairs, sorted
    reference: str  # scope, id and version of the reference values in force ("" if none)


class MeasurementDriftDetector:
    """A device's measurements changed between two authenticated appraisals while the reference
    values it was appraised against did not: someone changed firmware, software or calibration
    without the operator publishing a matching update (even to another already-accepted value).
    """

    def __init__(self) -> None:
        self._last: dict[str, Measured] = {}

    def observe(self, device_id: str, measured: Measured) -> Finding | None:
        previous = self._last.get(device_id)
        self._last[device_id] = measured
        if previous is None or previous.reference != measured.reference:
            return None
        before, after = dict(previous.measurements), dict(measured.measurements)
        changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        if not changed:
            return None
        return Finding(
            detector=MEASUREMENT_DRIFT,
            device=device_id,
            subject=device_id,
            message=f"device {device_id} now reports different {', '.join(changed)} with no "
            f"reference-value update ({measured.reference or 'no reference values'})",
            detail={
                "changed": changed,
                "before": {k: before.get(k, "") for k in changed},
                "after": {k: after.get(k, "") for k in changed},
                "reference": measured.reference,
            },
        )


def hellinger_fidelity(counts: Mapping[str, int], ideal: Mapping[str, float]) -> float:
    """(sum_i sqrt(p_i q_i))^2 between measured frequencies and an ideal distribution;
    1.0 for identical distributions, 0.0 for disjoint ones (as qiskit's hellinger_fidelity)."""
    total = sum(counts.values())
    if total <= 0:
        return 0.0
    overlap = sum(math.sqrt(counts.get(k, 0) / total * p) for k, p in ideal.items())
    return overlap**2
