"""The scheduler as it was before queues moved to the store (everything held in memory), kept
as the reference order: the windowed scheduler must show and follow exactly this order.

Which queued job a device runs next: weighted fair share between projects, priority classes
within a project, no starvation; and, from the same tags, every queued job's exact position.

Between projects (start-time fair queueing, per device): when a job arrives, its project gets
one more *slot*, tagged start + cost / weight, where start is the later of the device's virtual
time (the tag of the slot last dispatched) and the project's previous slot tag, and cost is the
job's expected device time (its shots times the device's measured time per shot). The device
always runs the project whose first slot has the smallest tag. Backlogged projects therefore
share device time in proportion to their weights, and a project that was idle earns no credit.

Within a project: jobs fill the project's slots in order of submission time minus
(priority - 1) x `aging_seconds`. A high-priority job overtakes normal and low ones submitted up
to that long before it, never a job that has waited longer: every job reaches the head.

Tags are fixed when slots are made, so the order only changes when something new happens
(a job arrives or leaves early, a weight changes): the position a researcher sees is the order
the dispatcher follows. Holds (maintenance, reservations, sessions) are applied by the
dispatcher when it picks, not in positions; `waiting_for` explains them.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from broker.jobs.model import Job, JobState

# Until a device has finished a job, assume this long per shot (seconds).
_DEFAULT_SECONDS_PER_SHOT = 1e-3
_SMOOTHING = 0.2


@dataclass(frozen=True, kw_only=True, slots=True)
class SchedulerSettings:
    """[scheduling] in broker.toml."""

    # How far one priority class moves a job ahead within its project (and how long a job
    # waits at most before no later job of a higher class can pass it).
    aging_seconds: float = 300.0
    # Sessions: the longest a session may stay open, and how long it may sit idle.
    session_max_seconds: float = 3600.0
    session_idle_seconds: float = 300.0


def _place(job: Job, aging: float) -> tuple[float, str]:
    return (job.created_at - (job.priority - 1) * aging, job.job_id)


class _ProjectQueue:
    """One project's queued jobs on one device: jobs in place order, slot tags ascending."""

    __slots__ = ("jobs", "keys", "last_tag", "slots")

    def __init__(self) -> None:
        self.keys: list[tuple[float, str]] = []
        self.jobs: dict[str, Job] = {}
        self.slots: list[float] = []
        self.last_tag = 0.0


class _DeviceState:
    __slots__ = ("learned", "per_job", "per_shot", "projects", "virtual_time")

    def __init__(self) -> None:
        self.projects: dict[str, _ProjectQueue] = {}
        self.virtual_time = 0.0
        self.per_shot = _DEFAULT_SECONDS_PER_SHOT
        self.per_job = 0.0  # measured seconds per job (for ETAs); 0 until learned
        self.learned = False


class Scheduler:
    def __init__(self, settings: SchedulerSettings, *, weight_of: Callable[[str], int]) -> None:
        self.settings = settings
        self.weight_of = weight_of
        self._devices: dict[str, _DeviceState] = {}
        self._where: dict[str, tuple[str, str]] = {}  # job id -> (device, project) while queued
        # Per device, the first 1-based position that changes since `take_moves` last ran:
        # every job ahead of it kept its place (see `take_moves`).
        self._moved: dict[str, int] = {}

    # --- the queue book, fed with every job change ----------------------------------------

    def observe(self, job: Job) -> None:
        """Keep the book in step with a job's new state (the ledger calls this on every write)."""
        where = self._where.get(job.job_id)
        if job.state is JobState.QUEUED:
            if where is not None:
                self._queue(job.device_id, job.project).jobs[job.job_id] = job  # same place
                return
            self._enqueue(job)
        elif where is not None:
            self._remove(job.job_id, dispatched=job.state is JobState.DISPATCHED)

    def load(self, jobs: Iterable[Job]) -> None:
        for job in sorted(jobs, key=lambda j: (j.created_at, j.job_id)):
            self.observe(job)

    def forget(self, job_id: str) -> None:
        if job_id in self._where:
            self._remove(job_id, dispatched=False)

    def replace_device(self, device_id: str, jobs: Iterable[Job]) -> None:
        """Swap one device's queue for the store's (another replica changed it)."""
        for job_id, (device, _) in list(self._where.items()):
            if device == device_id:
                self._remove(job_id, dispatched=False)
        self.load(jobs)
        self._moved[device_id] = 1

    def take_moves(self) -> dict[str, int]:
        """Devices whose order changed since the last call, each with the first position that
        can have changed. A job entering at position p moves only jobs now behind it; a job
        leaving from p only jobs then behind it: slots are handed out per project in place
        order, so a change touches its own project from its place on and other projects only
        past the slot it added or freed, which lies behind it (test_scheduler checks this on
        random queues)."""
        moved, self._moved = self._moved, {}
        return moved

    def _note_move(self, device_id: str, position: int) -> None:
        self._moved[device_id] = min(position, self._moved.get(device_id, position))

    def _queue(self, device_id: str, project: str) -> _ProjectQueue:
        return self._device(device_id).projects.setdefault(project, _ProjectQueue())

    def _device(self, device_id: str) -> _DeviceState:
        state = self._devices.get(device_id)
        if state is None:
            state = self._devices[device_id] = _DeviceState()
        return state

    def _enqueue(self, job: Job) -> None:
        state = self._device(job.device_id)
        queue = self._queue(job.device_id, job.project)
        cost = max(job.shots, 1) * state.per_shot
        start = max(state.virtual_time, queue.last_tag)
        queue.last_tag = start + cost / max(1, self.weight_of(job.project))
        queue.slots.append(queue.last_tag)
        bisect.insort(queue.keys, _place(job, self.settings.aging_seconds))
        queue.jobs[job.job_id] = job
        self._where[job.job_id] = (job.device_id, job.project)
        self._note_move(job.device_id, self.position(job) or 1)

    def _remove(self, job_id: str, *, dispatched: bool) -> None:
        device_id, project = self._where[job_id]
        state = self._devices[device_id]
        queue = state.projects[project]
        # A dispatch frees the project's head slot, so the move starts at its head's place.
        first = queue.jobs[queue.keys[0][1]] if dispatched else queue.jobs[job_id]
        self._note_move(device_id, self.position(first) or 1)
        del self._where[job_id]
        job = queue.jobs.pop(job_id)
        key = _place(job, self.settings.aging_seconds)
        index = bisect.bisect_left(queue.keys, key)
        if index < len(queue.keys) and queue.keys[index] == key:
            del queue.keys[index]
        # The head slot goes with a dispatched job (and moves virtual time); a job that left
        # early gives back its project's last slot, so the project is not charged for it.
        if dispatched:
            state.virtual_time = max(state.virtual_time, queue.slots.pop(0))
        else:
            queue.slots.pop()
            queue.last_tag = queue.slots[-1] if queue.slots else state.virtual_time
        if not queue.jobs:
            # Keep the tag: a project that empties and refills at once is not served twice.
            queue.slots.clear()

    def depth(self, device_id: str) -> int:
        state = self._devices.get(device_id)
        return sum(len(q.jobs) for q in state.projects.values()) if state else 0

    def has_session_jobs(self, device_id: str, session_id: str) -> bool:
        state = self._devices.get(device_id)
        return state is not None and any(
            job.session_id == session_id
            for queue in state.projects.values()
            for job in queue.jobs.values()
        )

    # --- order ----------------------------------------------------------------------------

    def next_job(
        self, device_id: str, projects: Iterable[str] | None = None, session: str | None = None
    ) -> Job | None:
        """The job the device should run now, among the given projects (None: all) and, with
        `session`, among that session's jobs only."""
        state = self._devices.get(device_id)
        if state is None:
            return None
        allowed = None if projects is None else set(projects)
        best: tuple[tuple[float, str], Job] | None = None
        for project, queue in state.projects.items():
            if not queue.jobs or (allowed is not None and project not in allowed):
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
            tag = (queue.slots[first[0]], project)
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
        queue = state.projects[project]
        place = _place(queue.jobs[job.job_id], self.settings.aging_seconds)
        own = bisect.bisect_left(queue.keys, place)
        tag = queue.slots[own]
        ahead = own
        for other, other_queue in state.projects.items():
            if other == project:
                continue
            # Equal tags go to the project whose name sorts first, as in next_job.
            if other < project:
                ahead += bisect.bisect_right(other_queue.slots, tag)
            else:
                ahead += bisect.bisect_left(other_queue.slots, tag)
        return ahead + 1

    def order(self, device_id: str) -> list[Job]:
        """Every queued job of the device in run order (tests and diagnostics)."""
        state = self._devices.get(device_id)
        if state is None:
            return []
        tagged = [
            ((queue.slots[index], project), queue.jobs[job_id])
            for project, queue in state.projects.items()
            for index, (_, job_id) in enumerate(queue.keys)
        ]
        return [job for _, job in sorted(tagged, key=lambda pair: pair[0])]
