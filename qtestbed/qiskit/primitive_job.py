"""What the Sampler's and the Estimator's jobs share: one broker batch, watched and cancelled
through the `QtestbedJob` that submitted it."""

from __future__ import annotations

from qiskit.primitives import BasePrimitiveJob
from qiskit.providers import JobStatus

from qtestbed.qiskit.job import QtestbedJob


class BatchPrimitiveJob(BasePrimitiveJob):  # type: ignore[misc]
    """The batch one primitive `run` submitted; `result()` waits on the broker's pushed updates."""

    def __init__(self, job: QtestbedJob) -> None:
        super().__init__(job.job_id())
        self.job = job

    def status(self) -> JobStatus:
        return self.job.status()

    def done(self) -> bool:
        return bool(self.status() == JobStatus.DONE)

    def running(self) -> bool:
        return bool(self.status() == JobStatus.RUNNING)

    def cancelled(self) -> bool:
        return bool(self.status() == JobStatus.CANCELLED)

    def in_final_state(self) -> bool:
        return self.status() in (JobStatus.DONE, JobStatus.ERROR, JobStatus.CANCELLED)

    def cancel(self) -> bool:
        return self.job.cancel()
