"""A job as its owner sees it: with its exact queue position, an ETA, the device's queue depth
and, while it waits, why (in words the owner can act on, or wait out)."""

from __future__ import annotations

from dataclasses import dataclass

from broker.clock import Clock
from broker.devices.model import DeviceStatus
from broker.devices.operations import DeviceSchedule
from broker.devices.registry import DeviceRegistry
from broker.jobs.model import Job, JobState
from broker.jobs.ports import DriverView
from broker.jobs.scheduler import Scheduler, eta_seconds
from broker.jobs.sessions import SessionManager
from broker.policy.attributes import format_time


@dataclass(frozen=True, kw_only=True, slots=True)
class JobView:
    """A job with its live queue position (0 when not queued)."""

    job: Job
    queue_position: int
    waiting_for: str = ""
    eta: float | None = None
    device_queue_depth: int = 0


class JobViews:
    def __init__(
        self,
        *,
        clock: Clock,
        scheduler: Scheduler,
        registry: DeviceRegistry,
        schedule: DeviceSchedule,
        sessions: SessionManager,
        drivers: DriverView,
    ) -> None:
        self._clock = clock
        self._scheduler = scheduler
        self._registry = registry
        self._schedule = schedule
        self._sessions = sessions
        self._drivers = drivers

    async def view(self, job: Job) -> JobView:
        if job.state is not JobState.QUEUED:
            return JobView(job=job, queue_position=0)
        return await self.queued(job)

    def placed_by_store(self, job: Job) -> bool:
        """Whether only the store can tell a job's position as it enters its queue."""
        return self._scheduler.placed_by_store(job)

    async def queued(self, job: Job, *, position: int | None = None) -> JobView:
        """Position and ETA from the scheduler's order: the order the dispatcher follows.
        `position`: the store's count of it, when the write that queued the job made one."""
        if position is None:
            position = await self._scheduler.position(job) or 0
        now = self._clock.now()
        eta = None
        if position:
            per_job = self._scheduler.seconds_per_job(job.device_id)
            busy, lanes = self._drivers.lanes(job.device_id, per_job, now)
            eta = now + eta_seconds(position, per_job, busy, lanes)
        return JobView(
            job=job,
            queue_position=position,
            waiting_for=self.waiting_for(job),
            eta=eta,
            device_queue_depth=self._scheduler.depth(job.device_id),
        )

    def waiting_for(self, job: Job) -> str:
        """Why a queued job is not moving, in words its owner can act on (or wait out)."""
        device = self._registry.get(job.device_id)
        if device is not None and device.status is DeviceStatus.REVOKED:
            return (
                f"device {job.device_id} was revoked ({device.status_reason}); it will not run "
                "again: cancel this job and submit it to another device"
            )
        if device is not None and device.status is not DeviceStatus.ACTIVE:
            return (
                f"device {job.device_id} is {device.status.value.lower()} "
                f"({device.status_reason}); the job stays queued until an operator releases it"
            )
        now = self._clock.now()
        available = self._schedule.availability(job.device_id, now)
        if not available.runs_jobs or (
            available.projects is not None and job.project not in available.projects
        ):
            return available.why
        session = self._sessions.active(job.device_id)
        if session is not None and session.session_id != job.session_id:
            return (
                f"device {job.device_id} is held by a session until at most "
                f"{format_time(session.closes_at)}; the job runs when it closes"
            )
        if not self._drivers.attested(job.device_id, now):
            return f"device {job.device_id} has no freshly attested driver connected"
        return ""
