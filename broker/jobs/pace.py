"""Each device's measured pace: seconds per shot (new jobs' slot costs) and per job (ETAs),
smoothed over the jobs it completes."""

from __future__ import annotations

from broker.jobs.model import Job, JobState

# Until a device has finished a job, assume this long per shot (seconds).
_DEFAULT_SECONDS_PER_SHOT = 1e-3
_SMOOTHING = 0.2


class _Pace:
    __slots__ = ("learned", "per_job", "per_shot")

    def __init__(self) -> None:
        self.per_shot = _DEFAULT_SECONDS_PER_SHOT
        self.per_job = 0.0  # measured seconds per job (for ETAs); 0 until learned
        self.learned = False


class DevicePace:
    def __init__(self) -> None:
        self._devices: dict[str, _Pace] = {}

    def per_shot(self, device_id: str) -> float:
        pace = self._devices.get(device_id)
        return pace.per_shot if pace is not None else _DEFAULT_SECONDS_PER_SHOT

    def seconds_per_job(self, device_id: str) -> float:
        pace = self._devices.get(device_id)
        return pace.per_job if pace is not None and pace.learned else 1.0

    def finished(self, job: Job) -> None:
        """Learn from a completed job."""
        if job.state is not JobState.COMPLETED or job.dispatched_at is None:
            return
        if job.finished_at is None:
            return
        took = max(0.0, job.finished_at - job.dispatched_at)
        pace = self._devices.setdefault(job.device_id, _Pace())
        per_shot = took / max(job.shots, 1)
        if pace.learned:
            pace.per_shot += _SMOOTHING * (per_shot - pace.per_shot)
            pace.per_job += _SMOOTHING * (took - pace.per_job)
        else:
            pace.per_shot, pace.per_job, pace.learned = per_shot, took, True
