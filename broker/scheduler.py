"""Which queued job a device runs next: weighted fair share between projects, priority classes
within a project, no starvation; and, from the same rule, every queued job's exact position.

Between projects (stride scheduling): each project's device time is tracked per device, decayed
with a half-life, and divided by its weight; the i-th waiting job of project p carries the tag
(usage_p + (i + 1) x E) / weight_p, where E is the device's expected job time, and the device
runs the job with the smallest (tag, project). With equal job times, long-run device time
splits in proportion to the weights.

Within a project: a job's place is its submission time minus (priority - 1) x `aging_seconds`.
A high-priority job therefore overtakes normal and low ones submitted up to that long before it,
but never a job that has waited longer than that: every job reaches the head eventually.

Positions use the same keys, so the position a researcher sees is the order the dispatcher will
follow if nothing new arrives. Holds (maintenance, reservations, sessions) are applied by the
dispatcher when it picks, not in positions; `waiting_for` explains them.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from broker.domain import Job, JobState

# Until a device has finished a job, assume this long for one (seconds).
_DEFAULT_ESTIMATE = 1.0
_ESTIMATE_SMOOTHING = 0.2


@dataclass(frozen=True, kw_only=True, slots=True)
class SchedulerSettings:
    """[scheduling] in broker.toml."""

    # How far one priority class moves a job ahead within its project (and how long a job
    # waits at most before no later job of a higher class can pass it).
    aging_seconds: float = 300.0
    # Projects' past device time counts half after this long.
    usage_half_life_seconds: float = 3600.0
    # Sessions: the longest a session may stay open, and how long it may sit idle.
    session_max_seconds: float = 3600.0
    session_idle_seconds: float = 300.0


def _place(job: Job, aging: float) -> tuple[float, str]:
    return (job.created_at - (job.priority - 1) * aging, job.job_id)


class _ProjectQueue:
    """One project's queued jobs on one device, in their order within the project."""

    __slots__ = ("jobs", "keys")

    def __init__(self) -> None:
        self.keys: list[tuple[float, str]] = []
        self.jobs: dict[str, Job] = {}


class _DeviceState:
    __slots__ = ("decayed_at", "estimate", "learned", "projects", "usage")

    def __init__(self, now: float) -> None:
        self.projects: dict[str, _ProjectQueue] = {}
        self.usage: dict[str, float] = {}
        self.decayed_at = now
        self.estimate = _DEFAULT_ESTIMATE
        self.learned = False


class Scheduler:
    def __init__(
        self,
        settings: SchedulerSettings,
        *,
        weight_of: Callable[[str], int],
        now: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.weight_of = weight_of
        self.now = now
        self._devices: dict[str, _DeviceState] = {}
        self._where: dict[str, tuple[str, str]] = {}  # job id -> (device, project) while queued

    # --- the queue book, fed with every job change ----------------------------------------

    def observe(self, job: Job) -> None:
        """Keep the book in step with a job's new state (the ledger calls this on every write)."""
        self._drop(job.job_id)
        if job.state is JobState.QUEUED:
            device = self._device(job.device_id)
            queue = device.projects.setdefault(job.project, _ProjectQueue())
            bisect.insort(queue.keys, _place(job, self.settings.aging_seconds))
            queue.jobs[job.job_id] = job
            self._where[job.job_id] = (job.device_id, job.project)

    def forget(self, job_id: str) -> None:
        self._drop(job_id)

    def replace_device(self, device_id: str, jobs: Iterable[Job]) -> None:
        """Swap one device's queue for the store's (another replica changed it)."""
        for job_id, (device, _) in list(self._where.items()):
            if device == device_id:
                self._drop(job_id)
        self.load(jobs)

    def has_session_jobs(self, device_id: str, session_id: str) -> bool:
        state = self._devices.get(device_id)
        return state is not None and any(
            job.session_id == session_id
            for queue in state.projects.values()
            for job in queue.jobs.values()
        )

    def load(self, jobs: Iterable[Job]) -> None:
        for job in jobs:
            self.observe(job)

    def _drop(self, job_id: str) -> None:
        where = self._where.pop(job_id, None)
        if where is None:
            return
        device_id, project = where
        queue = self._devices[device_id].projects[project]
        job = queue.jobs.pop(job_id)
        key = _place(job, self.settings.aging_seconds)
        index = bisect.bisect_left(queue.keys, key)
        if index < len(queue.keys) and queue.keys[index] == key:
            del queue.keys[index]
        if not queue.jobs:
            del self._devices[device_id].projects[project]

    def _device(self, device_id: str) -> _DeviceState:
        state = self._devices.get(device_id)
        if state is None:
            state = self._devices[device_id] = _DeviceState(self.now())
        return state

    def depth(self, device_id: str) -> int:
        state = self._devices.get(device_id)
        return sum(len(q.jobs) for q in state.projects.values()) if state else 0

    # --- device time ----------------------------------------------------------------------

    def estimate(self, device_id: str) -> float:
        return self._device(device_id).estimate

    def charge(self, device_id: str, project: str, seconds: float) -> None:
        """Add device time to a project (the estimate at dispatch, the correction at the end)."""
        state = self._device(device_id)
        self._decay(state)
        state.usage[project] = max(0.0, state.usage.get(project, 0.0) + seconds)

    def finished(self, job: Job) -> None:
        """A dispatched job ended: correct its project's charge and learn the device's pace."""
        if job.dispatched_at is None or job.finished_at is None:
            return
        took = max(0.0, job.finished_at - job.dispatched_at)
        state = self._device(job.device_id)
        self.charge(job.device_id, job.project, took - state.estimate)
        if job.state is JobState.COMPLETED:
            if state.learned:
                state.estimate += _ESTIMATE_SMOOTHING * (took - state.estimate)
            else:
                state.estimate, state.learned = took, True

    def _decay(self, state: _DeviceState) -> None:
        now = self.now()
        elapsed = now - state.decayed_at
        if elapsed <= 0:
            return
        factor = 0.5 ** (elapsed / self.settings.usage_half_life_seconds)
        for project in state.usage:
            state.usage[project] *= factor
        state.decayed_at = now

    # --- order ----------------------------------------------------------------------------

    def _tag(self, state: _DeviceState, project: str, index: int) -> tuple[float, str]:
        weight = max(1, self.weight_of(project))
        return ((state.usage.get(project, 0.0) + (index + 1) * state.estimate) / weight, project)

    def next_job(
        self, device_id: str, projects: Iterable[str] | None = None, session: str | None = None
    ) -> Job | None:
        """The job the device should run now, among the given projects (None: all) and, with
        `session`, among that session's jobs only."""
        state = self._devices.get(device_id)
        if state is None:
            return None
        self._decay(state)
        allowed = None if projects is None else set(projects)
        best: tuple[tuple[float, str], Job] | None = None
        for project, queue in state.projects.items():
            if allowed is not None and project not in allowed:
                continue
            first = next(
                (
                    (index, queue.jobs[job_id])
                    for index, (_, job_id) in enumerate(queue.keys)
                    if session is None or queue.jobs[job_id].session_id == session
                ),
                None,
            )
            if first is None:
                continue
            tag = self._tag(state, project, first[0])
            if best is None or tag < best[0]:
                best = (tag, first[1])
        return best[1] if best is not None else None

    def position(self, job: Job) -> int | None:
        """1-based place of a queued job in its device's run order; None if not queued here."""
        where = self._where.get(job.job_id)
        if where is None:
            return None
        device_id, project = where
        state = self._devices[device_id]
        self._decay(state)
        queue = state.projects[project]
        place = _place(queue.jobs[job.job_id], self.settings.aging_seconds)
        own = bisect.bisect_left(queue.keys, place)
        tag = self._tag(state, project, own)
        ahead = own
        for other, other_queue in state.projects.items():
            if other != project:
                ahead += self._count_before(state, other, len(other_queue.keys), tag)
        return ahead + 1

    def _count_before(
        self, state: _DeviceState, project: str, size: int, tag: tuple[float, str]
    ) -> int:
        """How many of `project`'s first `size` jobs have a smaller tag (tags grow with index)."""
        low, high = 0, size
        while low < high:
            middle = (low + high) // 2
            if self._tag(state, project, middle) < tag:
                low = middle + 1
            else:
                high = middle
        return low

    def order(self, device_id: str) -> list[Job]:
        """Every queued job of the device in run order (tests and diagnostics)."""
        state = self._devices.get(device_id)
        if state is None:
            return []
        self._decay(state)
        tagged = [
            (self._tag(state, project, index), queue.jobs[job_id])
            for project, queue in state.projects.items()
            for index, (_, job_id) in enumerate(queue.keys)
        ]
        return [job for _, job in sorted(tagged, key=lambda pair: pair[0])]


def eta_seconds(position: int, estimate: float, busy_remaining: float, drivers: int) -> float:
    """Expected wait before a job at `position` starts: the jobs ahead of it shared over the
    device's drivers, after what is running now."""
    lanes = max(1, drivers)
    return busy_remaining + math.floor((position - 1) / lanes) * estimate
