"""Usage metrics of finished jobs and of device time: who used what, and how busy devices are.

Labels stay bounded: device ids and device tiers come from the registry, projects from the
access registry, outcomes from the job states. Utilization is the busy share of a sliding
window, counting jobs still running up to now.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable

from broker.jobs.model import Job, JobState
from broker.metrics import BrokerMetrics

# How many finished busy intervals per device to remember for the utilization window.
_MAX_INTERVALS = 4096


class UsageTracker:
    def __init__(
        self, metrics: BrokerMetrics, *, window_seconds: float, tier_of: Callable[[str], str]
    ) -> None:
        self.metrics = metrics
        self.window = window_seconds
        self.tier_of = tier_of
        self._busy: dict[str, deque[tuple[float, float]]] = {}

    def job_finished(self, job: Job) -> None:
        """Count a job that reached a terminal state (called once per job by the ledger)."""
        labels = (job.device_id, job.project, self.tier_of(job.device_id), job.state.value.lower())
        self.metrics.job_outcomes.labels(*labels).inc()
        self.metrics.shots.labels(*labels).inc(job.shots)
        ran = job.state in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)
        if ran and job.dispatched_at is not None and job.finished_at is not None:
            busy = max(0.0, job.finished_at - job.dispatched_at)
            self.metrics.busy.labels(job.device_id).inc(busy)
            intervals = self._busy.setdefault(job.device_id, deque(maxlen=_MAX_INTERVALS))
            intervals.append((job.dispatched_at, job.finished_at))

    def refresh(self, now: float, devices: Iterable[str], running: Iterable[Job]) -> None:
        """Set each device's utilization over the last window, in-flight jobs included."""
        start = now - self.window
        in_flight: dict[str, list[tuple[float, float]]] = {}
        for job in running:
            if job.dispatched_at is not None:
                in_flight.setdefault(job.device_id, []).append((job.dispatched_at, now))
        for device_id in devices:
            intervals = self._busy.get(device_id, deque())
            while intervals and intervals[0][1] <= start:
                intervals.popleft()
            busy = _covered([*intervals, *in_flight.get(device_id, [])], start, now)
            self.metrics.utilization.labels(device_id).set(busy / self.window)


def _covered(intervals: list[tuple[float, float]], start: float, end: float) -> float:
    """Length of the union of `intervals` clipped to [start, end] (several drivers may overlap)."""
    clipped = sorted((max(a, start), min(b, end)) for a, b in intervals if b > start and a < end)
    total, reach = 0.0, start
    for a, b in clipped:
        if b > reach:
            total += b - max(a, reach)
            reach = b
    return total
