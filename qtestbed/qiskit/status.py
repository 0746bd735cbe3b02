"""Broker job states as Qiskit `JobStatus`, for one job and for a batch."""

from __future__ import annotations

from collections.abc import Iterable

from qiskit.providers import JobStatus

from qtestbed.v1 import jobs_pb2

_STATUS = {
    jobs_pb2.JOB_STATE_QUEUED: JobStatus.QUEUED,
    jobs_pb2.JOB_STATE_DISPATCHED: JobStatus.RUNNING,
    jobs_pb2.JOB_STATE_RUNNING: JobStatus.RUNNING,
    jobs_pb2.JOB_STATE_COMPLETED: JobStatus.DONE,
    jobs_pb2.JOB_STATE_FAILED: JobStatus.ERROR,
    jobs_pb2.JOB_STATE_DENIED: JobStatus.ERROR,
    jobs_pb2.JOB_STATE_CANCELLED: JobStatus.CANCELLED,
}
TERMINAL = frozenset(
    {
        jobs_pb2.JOB_STATE_COMPLETED,
        jobs_pb2.JOB_STATE_FAILED,
        jobs_pb2.JOB_STATE_DENIED,
        jobs_pb2.JOB_STATE_CANCELLED,
    }
)


def state_name(job: jobs_pb2.Job) -> str:
    return jobs_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_")


def job_status(job: jobs_pb2.Job) -> JobStatus:
    return _STATUS.get(job.state, JobStatus.INITIALIZING)


def batch_status(jobs: Iterable[jobs_pb2.Job]) -> JobStatus:
    """ERROR if any job failed or was denied, else CANCELLED if any was cancelled (the batch can
    no longer complete), DONE when all are, QUEUED while none has started, else RUNNING."""
    statuses = [job_status(job) for job in jobs]
    for final in (JobStatus.ERROR, JobStatus.CANCELLED):
        if final in statuses:
            return final
    if all(status == JobStatus.DONE for status in statuses):
        return JobStatus.DONE
    if all(status in (JobStatus.QUEUED, JobStatus.INITIALIZING) for status in statuses):
        return JobStatus.QUEUED
    return JobStatus.RUNNING
