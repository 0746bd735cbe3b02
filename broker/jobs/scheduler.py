"""Which queued job a device runs next: weighted fair share between projects, priority classes
within a project, no starvation; and, from the same tags, every queued job's exact position.

Between projects (start-time fair queueing, per device): when a job arrives, its project gets
one more *slot*, tagged start + cost / weight, where start is the later of the device's virtual
time (the tag of the slot last dispatched) and the project's previous slot tag, and cost is the
job's expected device time (its shots times the device's measured time per shot). The device
always runs the project whose first slot has the smallest tag. Backlogged projects therefore
share device time in proportion to their weights, and a project that was idle earns no credit.

Within a project: jobs fill the project's slots in order of their place, submission time minus
(priority - 1) x `aging_seconds`. A high-priority job overtakes normal and low ones submitted up
to that long before it, never a job that has waited longer: every job reaches the head.

A job's place and cost are fixed when it is first queued (`price`), and the store keeps the
slots with the job writes that change them (broker.store.sql_queue), so the order only changes
when something new happens and is the same for every broker replica. This broker holds only the
front of each (device, project) lane (broker.jobs.queue_window) and reads the rest by index:
memory and restart time do not grow with the queue. A position is counted in memory when every
slot ahead of the job is in a window, and by the store otherwise; either way it is the order the
dispatcher follows. Holds (maintenance, reservations, sessions) are applied by the dispatcher
when it picks, not in positions; `waiting_for` explains them.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import math
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

from broker.jobs.model import Job, JobState, QueueLane
from broker.jobs.pace import DevicePace
from broker.jobs.queue_window import LaneWindow
from broker.jobs.store_positions import StorePositions
from broker.store.runner import StoreRunner

# A job leaving any of these states may have been queued: its lane changes.
_LEAVING = frozenset({JobState.CANCELLED, JobState.DENIED, JobState.FAILED})


@dataclass(frozen=True, kw_only=True, slots=True)
class SchedulerSettings:
    """[scheduling] in broker.toml."""

    # How far one priority class moves a job ahead within its project (and how long a job
    # waits at most before no later job of a higher class can pass it).
    aging_seconds: float = 300.0
    # Sessions: the longest a session may stay open, and how long it may sit idle.
    session_max_seconds: float = 3600.0
    session_idle_seconds: float = 300.0
    # Queued jobs (and slot tags) of each device's project held in memory; the rest are read
    # from the store when the front runs low.
    window_jobs: int = 2048

    def __post_init__(self) -> None:
        if isinstance(self.window_jobs, bool) or not isinstance(self.window_jobs, int):
            raise TypeError("window_jobs must be a whole number of jobs (at least 2)")
        if self.window_jobs < 2:
            raise TypeError(f"window_jobs must be at least 2, not {self.window_jobs}")


class Scheduler:
    def __init__(
        self,
        settings: SchedulerSettings,
        *,
        weight_of: Callable[[str], int],
        runner: StoreRunner,
    ) -> None:
        self.settings = settings
        self.weight_of = weight_of
        self._runner = runner
        self._store_positions = StorePositions(runner)
        self._lane_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._window = settings.window_jobs
        self._lanes: dict[str, dict[str, LaneWindow]] = {}  # device -> project -> lane
        self._pace = DevicePace()
        # Queued jobs of each open session, by (device, session): few, all held.
        self._sessions: dict[tuple[str, str], set[str]] = {}
        # Per device, the first 1-based position that changes since `take_moves` last ran.
        self._moved: dict[str, int] = {}
        # A lane was reset: read every lane's extent again before the next use.
        self._resync = False
        # Jobs the dispatcher picked whose lease write is in flight: still queued (in the
        # store and in the windows, so depths agree with the store), but not picked again.
        self._claimed: set[str] = set()

    # --- the queue book ---------------------------------------------------------------------

    async def load(self) -> None:
        """Read every lane's extent and the queued session jobs (not the jobs: windows fill
        when first used), at start."""
        store = self._runner.store
        lanes = await self._runner.call(store.queue_lanes)
        sessions = await self._runner.call(store.queued_sessions)
        self._lanes.clear()
        self._adopt(lanes)
        self._sessions = {key: set(ids) for key, ids in sessions.items()}
        self._resync = False

    async def sync(self) -> None:
        """Take up what other replicas changed: a lane whose extent differs from the store's
        is read again when next used."""
        if not self._runner.store.replicated:
            return  # only this broker writes: every change was seen
        lanes = await self._runner.call(self._runner.store.queue_lanes)
        changed = self._adopt(lanes)
        if changed:
            sessions = await self._runner.call(self._runner.store.queued_sessions)
            self._sessions = {key: set(ids) for key, ids in sessions.items()}
        for device_id in changed:
            self._note_move(device_id, 1)

    def _adopt(self, lanes: Iterable[QueueLane]) -> set[str]:
        changed = set()
        for row in lanes:
            lane = self._lanes.setdefault(row.device_id, {}).get(row.project)
            if lane is None:
                lane = LaneWindow(row.device_id, row.project, row.head, row.tail)
                self._lanes[row.device_id][row.project] = lane
                changed.add(row.device_id)
            elif (lane.head, lane.tail) != (row.head, row.tail):
                lane.reset(row.head, row.tail)
                changed.add(row.device_id)
        return changed

    def price(self, job: Job) -> Job:
        """The job with its place and slot cost fixed, as it is first queued."""
        weight = max(1, self.weight_of(job.project))
        return dataclasses.replace(
            job,
            place_at=job.created_at - (job.priority - 1) * self.settings.aging_seconds,
            queue_cost=max(job.shots, 1) * self._pace.per_shot(job.device_id) / weight,
        )

    def observe(self, job: Job) -> None:
        """Follow a job write of this broker (the ledger calls this on every write)."""
        state = job.state
        if state is not JobState.QUEUED:
            self._claimed.discard(job.job_id)
        if state not in _LEAVING and state not in (JobState.QUEUED, JobState.DISPATCHED):
            return  # RUNNING, COMPLETED: never from QUEUED
        lane = self._lane(job.device_id, job.project)
        position = self._memory_position(job) if state is not JobState.QUEUED else None
        if state is JobState.QUEUED:
            lane.entered(job, self._window)
            self._session_add(job)
            self._note_move(job.device_id, self._memory_position(job) or self._entry_bound(job))
            return
        self._session_drop(job)
        follows = lane.dispatched(job) if state is JobState.DISPATCHED else lane.left(job)
        if not follows:
            lane.reset(lane.head, lane.tail)
            self._resync = True
        first = 1 if state is JobState.DISPATCHED else position or 1
        self._note_move(job.device_id, first)

    def claim(self, job_id: str) -> None:
        """The dispatcher is writing a lease for this job: `next_job` passes over it until
        its write is observed (it leaves the queue) or the claim is dropped."""
        self._claimed.add(job_id)

    def unclaim(self, job_id: str) -> None:
        """The lease write failed: the job is next in line again, in its place."""
        self._claimed.discard(job_id)

    def forget(self, job: Job) -> None:
        """Another writer changed this job behind our back: read its lane again."""
        self._claimed.discard(job.job_id)
        lane = self._lane(job.device_id, job.project)
        lane.reset(lane.head, lane.tail)
        self._resync = True
        self._note_move(job.device_id, 1)

    def _lane(self, device_id: str, project: str) -> LaneWindow:
        lanes = self._lanes.setdefault(device_id, {})
        lane = lanes.get(project)
        if lane is None:  # new here; its extent is read with its windows
            lane = lanes[project] = LaneWindow(device_id, project, 0, 0)
        return lane

    def _session_add(self, job: Job) -> None:
        if job.session_id:
            self._sessions.setdefault((job.device_id, job.session_id), set()).add(job.job_id)

    def _session_drop(self, job: Job) -> None:
        key = (job.device_id, job.session_id)
        ids = self._sessions.get(key)
        if ids is not None:
            ids.discard(job.job_id)
            if not ids:
                del self._sessions[key]

    def take_moves(self) -> dict[str, int]:
        """Devices whose order changed since the last call, each with the first position that
        can have changed (1 when it is not known from memory)."""
        moved, self._moved = self._moved, {}
        return moved

    def _note_move(self, device_id: str, position: int) -> None:
        self._moved[device_id] = min(position, self._moved.get(device_id, position))

    def depth(self, device_id: str) -> int:
        return sum(lane.depth for lane in self._lanes.get(device_id, {}).values())

    def lane_depths(self, device_id: str) -> dict[str, int]:
        """Queued jobs of the device by project, for the projects that have any."""
        lanes = self._lanes.get(device_id, {})
        return {project: lane.depth for project, lane in lanes.items() if lane.depth > 0}

    def held(self, device_id: str) -> int:
        """Queued jobs of the device held in memory (diagnostics and tests)."""
        return sum(len(lane.jobs) for lane in self._lanes.get(device_id, {}).values())

    def has_session_jobs(self, device_id: str, session_id: str) -> bool:
        return bool(self._sessions.get((device_id, session_id)))

    # --- reading windows ------------------------------------------------------------------

    async def _ready(self, device_id: str) -> list[LaneWindow]:
        """The device's non-empty lanes, each window read up to date."""
        if self._resync:
            self._resync = False
            self._adopt(await self._runner.call(self._runner.store.queue_lanes))
        lanes = [lane for lane in self._lanes.get(device_id, {}).values() if lane.depth > 0]
        for lane in lanes:
            if lane.depth == 0 or not lane.wants_read(self._window):
                continue
            # One read of a lane at a time: the callers that find it short together (1,500
            # streams opened at once) wait for that read instead of each making its own.
            async with self._lane_lock(lane):
                for attempt in range(3):
                    if lane.depth == 0 or not lane.wants_read(self._window):
                        break
                    if attempt == 1:  # a read added too little: take the lane afresh
                        lane.reset(lane.head, lane.tail)
                    await self._read(lane)
        return [lane for lane in lanes if lane.depth > 0 and lane.jobs and lane.tags]

    def _lane_lock(self, lane: LaneWindow) -> asyncio.Lock:
        key = (lane.device_id, lane.project)
        lock = self._lane_locks.get(key)
        if lock is None:
            lock = self._lane_locks[key] = asyncio.Lock()
        return lock

    async def _read(self, lane: LaneWindow) -> None:
        if not lane.loaded:  # the extent too, in the same store call as the windows
            found = await self._runner.call(
                _read_lane, self._runner, lane.device_id, lane.project, self._window
            )
            head, tail, jobs, tags = found
            lane.reset(head, tail)
            lane.merge(jobs, head, tags, self._window)
            return
        after, first = lane.after_key(), lane.tags_end()
        store = self._runner.store
        jobs = await self._runner.call(
            store.queue_jobs, lane.device_id, lane.project, after=after, limit=self._window
        )
        tags = await self._runner.call(
            store.queue_tags, lane.device_id, lane.project, first, self._window
        )
        lane.merge(jobs, first, tags, self._window)

    # --- order ----------------------------------------------------------------------------

    async def next_job(
        self, device_id: str, projects: Collection[str] | None = None, session: str | None = None
    ) -> Job | None:
        """The job the device should run now, among the given projects (None: all) and, with
        `session`, among that session's jobs only."""
        if session is not None and not self.has_session_jobs(device_id, session):
            return None
        best: tuple[tuple[float, str], Job] | None = None
        for lane in await self._ready(device_id):
            if projects is not None and lane.project not in projects:
                continue
            found = await self._lane_head(lane, session)
            if found is not None and (best is None or (found[0], lane.project) < best[0]):
                best = ((found[0], lane.project), found[1])
        return best[1] if best is not None else None

    async def _lane_head(self, lane: LaneWindow, session: str | None) -> tuple[float, Job] | None:
        """The lane's first job (of `session`, if given) not claimed, with its slot's tag. Each
        claimed job ahead of it still holds its slot until its lease write is observed."""
        for index, job in enumerate(lane.jobs):
            if job.job_id in self._claimed or (session is not None and job.session_id != session):
                continue
            if index < len(lane.tags):
                return lane.tags[index], job
            break  # its slot lies past the tag window: the store has it
        else:
            if session is None or lane.jobs_complete():
                return None
        if session is None or self._claimed:
            # Past the windows, with claims in flight: the store cannot tell which slot is
            # free, so the lane waits for the next pass.
            return None
        found = await self._runner.call(
            self._runner.store.queue_session_head, lane.device_id, lane.project, session
        )
        return (found[1], found[0]) if found is not None else None

    async def position(self, job: Job) -> int | None:
        """1-based place of a queued job in its device's run order; None if not queued."""
        if job.state is not JobState.QUEUED:
            return None
        await self._ready(job.device_id)
        known = self._memory_position(job)
        if known is not None:
            return known
        return await self._store_positions.position(job)

    def placed_by_store(self, job: Job) -> bool:
        """Whether only the store can count the position of a job entering its lane now (so
        the insert's own store call counts it too, rather than a later one): it lands past its
        lane's window, or past where another lane's window reaches (its tag is at least its
        lane's last plus its own cost; a shallow lane behind a deep one, as a researcher's few
        jobs behind another's thousands: counted later, its position waited for a gathered
        store read)."""
        lane = self._lanes.get(job.device_id, {}).get(job.project)
        if lane is None or not lane.loaded:
            return False
        if lane.depth >= self._window or len(lane.tags) >= self._window // 2:
            # Past the window; or its tag, which the store computes, will not be read back (a
            # lane's tags are read again only when fewer than half a window are held).
            return True
        # The store tags it max(virtual time, last tag) + its cost: at least this.
        at_least = (lane.tags[-1] if lane.tags else 0.0) + job.queue_cost
        return self._slots_ahead(lane, at_least, exact=False) is None

    def _memory_position(self, job: Job) -> int | None:
        """The job's position counted from the windows alone; None when some slot that may be
        ahead of it lies outside them."""
        lane = self._lanes.get(job.device_id, {}).get(job.project)
        index = lane.index_of(job) if lane is not None and lane.loaded else None
        if lane is None or index is None or index >= len(lane.tags):
            return None
        ahead = self._slots_ahead(lane, lane.tags[index], exact=True)
        return None if ahead is None else index + ahead + 1

    def _entry_bound(self, job: Job) -> int:
        """A position the job just queued cannot be ahead of (1 when the windows cannot say):
        when its slot is the one just added at its lane's tail, whose tag the store computed,
        that tag is at least the lane's previous last tag."""
        lane = self._lanes.get(job.device_id, {}).get(job.project)
        index = lane.index_of(job) if lane is not None and lane.loaded else None
        if lane is None or index is None or index != len(lane.tags) or index != lane.depth - 1:
            return 1
        ahead = self._slots_ahead(lane, lane.tags[-1] if lane.tags else 0.0, exact=False)
        return 1 if ahead is None else index + ahead + 1

    def _slots_ahead(self, lane: LaneWindow, tag: float, *, exact: bool) -> int | None:
        """Other lanes' slots ordered before a slot of `lane` tagged `tag` (`exact`), or tagged
        below `tag` (not exact: a lower bound); None when a window does not reach that far."""
        ahead = 0
        for other in self._lanes.get(lane.device_id, {}).values():
            if other is lane or other.depth == 0:
                continue
            if not other.loaded or not (other.tags_complete() or other.tags[-1:] > [tag]):
                return None
            # Equal tags go to the project whose name sorts first, as in next_job.
            if exact and other.project < lane.project:
                ahead += bisect.bisect_right(other.tags, tag)
            else:
                ahead += bisect.bisect_left(other.tags, tag)
        return ahead

    # --- measured pace ------------------------------------------------------------------

    def seconds_per_job(self, device_id: str) -> float:
        return self._pace.seconds_per_job(device_id)

    def finished(self, job: Job) -> None:
        """Learn the device's pace from a completed job (used for new jobs' costs and ETAs)."""
        self._pace.finished(job)


def _read_lane(
    runner: StoreRunner, device_id: str, project: str, window: int
) -> tuple[int, int, list[Job], list[float]]:
    """On the store's thread: a lane's extent and the front of its jobs and tags, together."""
    store = runner.store
    head, tail = 0, 0
    for lane in store.queue_lanes():
        if (lane.device_id, lane.project) == (device_id, project):
            head, tail = lane.head, lane.tail
    jobs = store.queue_jobs(device_id, project, after=None, limit=window)
    return head, tail, jobs, store.queue_tags(device_id, project, head, window)


def eta_seconds(position: int, per_job: float, busy_remaining: float, drivers: int) -> float:
    """Expected wait before a job at `position` starts: the jobs ahead of it shared over the
    device's drivers, after what is running now."""
    lanes = max(1, drivers)
    return busy_remaining + math.floor((position - 1) / lanes) * per_job
