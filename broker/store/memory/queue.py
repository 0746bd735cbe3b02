"""The queue book of the memory store: the same lanes, slots and virtual times as
broker.store.sql_queue keeps in SQL, in the database's journaled tables (so a failed write
leaves them as they were), counted by scanning (a test store holds few jobs)."""

from __future__ import annotations

from collections.abc import Sequence

from broker.jobs.model import Job, JobState, QueueLane
from broker.store.memory.core import MemoryCore
from broker.store.memory.database import MemoryDatabase


def queue_change(db: MemoryDatabase, before: JobState | None, job: Job) -> None:
    """Move the job's lane as it went from `before` (None: new) to its state."""
    was, now = before is JobState.QUEUED, job.state is JobState.QUEUED
    if now and not was:
        _push(db, job)
    elif was and not now:
        _pop(db, job.device_id, job.project, front=job.state is JobState.DISPATCHED)


def _push(db: MemoryDatabase, job: Job) -> None:
    lane = (job.device_id, job.project)
    head, tail, last = db.queue_lanes.get(lane) or (0, 0, 0.0)
    tag = max(db.queue_clocks.get(job.device_id) or 0.0, last) + job.queue_cost
    db.queue_slots.put((*lane, tail), tag)
    db.queue_lanes.put(lane, (head, tail + 1, tag))


def _pop(db: MemoryDatabase, device_id: str, project: str, *, front: bool) -> None:
    lane = (device_id, project)
    head, tail, last = db.queue_lanes.get(lane) or (0, 0, 0.0)
    if head >= tail:
        return
    vt = db.queue_clocks.get(device_id) or 0.0
    ordinal = head if front else tail - 1
    tag = db.queue_slots.get((*lane, ordinal))
    assert tag is not None, "a lane's slots run from head to tail"
    db.queue_slots.delete((*lane, ordinal))
    if front:
        head += 1
        db.queue_clocks.put(device_id, max(vt, tag))
    else:
        tail -= 1
        before = db.queue_slots.get((*lane, tail - 1)) if tail > head else None
        last = vt if before is None else before
    db.queue_lanes.put(lane, (head, tail, last))


def _key(job: Job) -> tuple[float, str]:
    return (job.place_at, job.job_id)


class MemoryQueue(MemoryCore):
    """The read side of the queue book (the writes happen in MemoryJobs' transactions)."""

    def queue_lanes(self) -> list[QueueLane]:
        with self._read() as db:
            return [
                QueueLane(device_id=device_id, project=project, head=head, tail=tail)
                for (device_id, project), (head, tail, _) in db.queue_lanes.items()
            ]

    def queue_depths(self) -> dict[str, int]:
        depths: dict[str, int] = {}
        for lane in self.queue_lanes():
            if lane.depth:
                depths[lane.device_id] = depths.get(lane.device_id, 0) + lane.depth
        return depths

    def _lane_jobs(self, db: MemoryDatabase, device_id: str, project: str) -> list[Job]:
        return sorted(
            (
                row.job
                for row in db.jobs.values()
                if row.job.state is JobState.QUEUED
                and (row.job.device_id, row.job.project) == (device_id, project)
            ),
            key=_key,
        )

    def queue_jobs(
        self, device_id: str, project: str, *, after: tuple[float, str] | None, limit: int
    ) -> list[Job]:
        with self._read() as db:
            jobs = self._lane_jobs(db, device_id, project)
        return [job for job in jobs if after is None or _key(job) > after][:limit]

    def queue_tags(self, device_id: str, project: str, first: int, limit: int) -> list[float]:
        with self._read() as db:
            _, tail, _ = db.queue_lanes.get((device_id, project)) or (0, 0, 0.0)
            ordinals = range(first, min(tail, first + limit))
            return [db.queue_slots.get((device_id, project, n)) or 0.0 for n in ordinals]

    def queued_sessions(self) -> dict[tuple[str, str], list[str]]:
        ids: dict[tuple[str, str], list[str]] = {}
        with self._read() as db:
            for row in db.jobs.values():
                if row.job.state is JobState.QUEUED and row.job.session_id:
                    key = (row.job.device_id, row.job.session_id)
                    ids.setdefault(key, []).append(row.job.job_id)
        return ids

    def queue_session_head(
        self, device_id: str, project: str, session_id: str
    ) -> tuple[Job, float] | None:
        with self._read() as db:
            jobs = self._lane_jobs(db, device_id, project)
            head, _, _ = db.queue_lanes.get((device_id, project)) or (0, 0, 0.0)
            for rank, job in enumerate(jobs):
                if job.session_id == session_id:
                    tag = db.queue_slots.get((device_id, project, head + rank))
                    return None if tag is None else (job, tag)
        return None

    def queue_positions(self, device_id: str, jobs: Sequence[Job]) -> dict[str, int | None]:
        return {job.job_id: self.queue_position(job) for job in jobs}

    def queue_position(self, job: Job) -> int | None:
        with self._read() as db:
            jobs = self._lane_jobs(db, job.device_id, job.project)
            ids = [j.job_id for j in jobs]
            if job.job_id not in ids:
                return None
            head, _, _ = db.queue_lanes.get((job.device_id, job.project)) or (0, 0, 0.0)
            ordinal = head + ids.index(job.job_id)
            tag = db.queue_slots.get((job.device_id, job.project, ordinal))
            mine = (tag, job.project, ordinal)
            ahead = sum(
                1
                for (device_id, project, n), other in db.queue_slots.items()
                if device_id == job.device_id and (other, project, n) < mine
            )
        return ahead + 1
