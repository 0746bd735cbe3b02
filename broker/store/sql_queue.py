"""The queue book in SQL: every device's fair-queueing slots, kept in the same transaction as
the job write that changes them, and read by index (see broker.jobs.scheduler for the order).

A device's queue is one *lane* per project: the lane's slots carry ordinals head .. tail - 1
(a slot is added at the tail when a job is queued; a dispatch takes the head slot and moves the
device's virtual time to its tag; a job that leaves early gives back the tail slot), and its
jobs are in place order (`place_at`, job id). The lane's k-th job by place holds its k-th slot.
A job's position is then the number of the device's slots ordered before its own slot by
(tag, project, ordinal): two indexed counts, the shorter way (from the back when the job is
near it, as new jobs are).
"""

# S608: only fixed column lists and `?` markers are interpolated; values are parameters.
# ruff: noqa: S608

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

from broker.jobs.model import Job, JobState, QueueLane
from broker.store import rows
from broker.store.cursor import Cursor
from broker.store.schema import Dialect

# A count from the back stops here; past it the count from the front is the shorter one.
_BACK_COUNT_LIMIT = 512
# Jobs a lane orders by; the partial index jobs_queue_place serves it (the literal matters:
# a database uses a partial index only when the query names its condition as written).
_LANE = "state = 'QUEUED' AND device_id = ? AND project = ?"
_AFTER_KEY = "(place_at, job_id) > (?, ?)"
_BEFORE_KEY = "(place_at, job_id) < (?, ?)"
_SLOT_AFTER = "device_id = ? AND (tag, project, ordinal) > (?, ?, ?)"
_SLOT_BEFORE = "device_id = ? AND (tag, project, ordinal) < (?, ?, ?)"
# Leaving QUEUED is one of these; the lane then changes in the same transaction.
QUEUE_STATES = frozenset(
    {JobState.QUEUED, JobState.DISPATCHED, JobState.CANCELLED, JobState.DENIED, JobState.FAILED}
)


def queued_sessions_sql(dialect: Dialect) -> str:
    """Every queued job in a session: the partial index jobs_queue_session holds just these."""
    return (
        f"SELECT device_id, session_id, job_id FROM {dialect.session_jobs}"
        " WHERE state = 'QUEUED' AND session_id <> ''"
    )


class SqlQueue(abc.ABC):
    _dialect: Dialect

    @abc.abstractmethod
    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]: ...

    # --- writes, inside the job write's transaction ---------------------------------------

    def _queue_change(self, cur: Cursor, before: JobState | None, job: Job) -> None:
        """Move the job's lane as the job went from `before` (None: new) to its state."""
        was, now = before is JobState.QUEUED, job.state is JobState.QUEUED
        if now and not was:
            self._slot_push(cur, job)
        elif was and not now:
            self._slot_pop(cur, job.device_id, job.project, front=job.state is JobState.DISPATCHED)

    def _lane_row(self, cur: Cursor, device_id: str, project: str) -> tuple[float, int, int, float]:
        """(virtual time, head, tail, last tag) of a lane, made empty when new."""
        cur.execute(
            "INSERT INTO queue_clocks (device_id, virtual_time) VALUES (?, 0)"
            " ON CONFLICT (device_id) DO NOTHING",
            (device_id,),
        )
        cur.execute(
            "INSERT INTO queue_lanes (device_id, project, head, tail, last_tag)"
            " VALUES (?, ?, 0, 0, 0) ON CONFLICT (device_id, project) DO NOTHING",
            (device_id, project),
        )
        cur.execute(
            "SELECT c.virtual_time, l.head, l.tail, l.last_tag FROM queue_lanes l"
            " JOIN queue_clocks c ON c.device_id = l.device_id"
            " WHERE l.device_id = ? AND l.project = ?",
            (device_id, project),
        )
        vt, head, tail, last = cur.fetchone()
        return float(vt), int(head), int(tail), float(last)

    def _slot_push(self, cur: Cursor, job: Job) -> None:
        vt, _, tail, last = self._lane_row(cur, job.device_id, job.project)
        tag = max(vt, last) + job.queue_cost
        cur.execute(
            "INSERT INTO queue_slots (device_id, project, ordinal, tag) VALUES (?, ?, ?, ?)",
            (job.device_id, job.project, tail, tag),
        )
        cur.execute(
            "UPDATE queue_lanes SET tail = ?, last_tag = ? WHERE device_id = ? AND project = ?",
            (tail + 1, tag, job.device_id, job.project),
        )

    def _slot_pop(self, cur: Cursor, device_id: str, project: str, *, front: bool) -> None:
        vt, head, tail, last = self._lane_row(cur, device_id, project)
        if head >= tail:
            return  # nothing to give back (a lane rebuilt by the migration may be short)
        ordinal = head if front else tail - 1
        cur.execute(
            "SELECT tag FROM queue_slots WHERE device_id = ? AND project = ? AND ordinal = ?",
            (device_id, project, ordinal),
        )
        tag = float(cur.fetchone()[0])
        cur.execute(
            "DELETE FROM queue_slots WHERE device_id = ? AND project = ? AND ordinal = ?",
            (device_id, project, ordinal),
        )
        if front:  # the head slot was served: the device's virtual time reaches its tag
            head += 1
            cur.execute(
                "UPDATE queue_clocks SET virtual_time = ? WHERE device_id = ?",
                (max(vt, tag), device_id),
            )
        else:  # the project is not charged for a job that never ran
            tail -= 1
            last = vt
            if tail > head:
                cur.execute(
                    "SELECT tag FROM queue_slots WHERE device_id = ? AND project = ?"
                    " AND ordinal = ?",
                    (device_id, project, tail - 1),
                )
                last = float(cur.fetchone()[0])
        cur.execute(
            "UPDATE queue_lanes SET head = ?, tail = ?, last_tag = ?"
            " WHERE device_id = ? AND project = ?",
            (head, tail, last, device_id, project),
        )

    # --- reads ----------------------------------------------------------------------------

    def queue_lanes(self) -> list[QueueLane]:
        found = self._query("SELECT device_id, project, head, tail FROM queue_lanes")
        return [
            QueueLane(device_id=str(d), project=str(p), head=int(h), tail=int(t))
            for d, p, h, t in found
        ]

    def queue_depths(self) -> dict[str, int]:
        found = self._query(
            "SELECT device_id, SUM(tail - head) FROM queue_lanes GROUP BY device_id"
            " HAVING SUM(tail - head) > 0"
        )
        return {str(device): int(count) for device, count in found}

    def queue_jobs(
        self, device_id: str, project: str, *, after: tuple[float, str] | None, limit: int
    ) -> list[Job]:
        key = after if after is not None else (float("-inf"), "")
        found = self._query(
            f"SELECT {rows.JOB_SELECT} FROM jobs WHERE {_LANE} AND {_AFTER_KEY}"
            " ORDER BY place_at, job_id LIMIT ?",
            (device_id, project, *key, limit),
        )
        return [rows.job_from_row(row) for row in found]

    def queue_tags(self, device_id: str, project: str, first: int, limit: int) -> list[float]:
        found = self._query(
            "SELECT tag FROM queue_slots WHERE device_id = ? AND project = ? AND ordinal >= ?"
            " ORDER BY ordinal LIMIT ?",
            (device_id, project, first, limit),
        )
        return [float(tag) for (tag,) in found]

    def queued_sessions(self) -> dict[tuple[str, str], list[str]]:
        found = self._query(queued_sessions_sql(self._dialect))
        ids: dict[tuple[str, str], list[str]] = {}
        for device_id, session_id, job_id in found:
            ids.setdefault((str(device_id), str(session_id)), []).append(str(job_id))
        return ids

    def queue_session_head(
        self, device_id: str, project: str, session_id: str
    ) -> tuple[Job, float] | None:
        found = self._query(
            f"SELECT {rows.JOB_SELECT} FROM jobs WHERE state = 'QUEUED' AND device_id = ?"
            " AND session_id = ? AND project = ? ORDER BY place_at, job_id LIMIT 1",
            (device_id, session_id, project),
        )
        if not found:
            return None
        job = rows.job_from_row(found[0])
        slot = self._slot_of(job)
        return None if slot is None else (job, slot[0])

    def queue_position(self, job: Job) -> int | None:
        slot = self._slot_of(job)
        if slot is None:
            return None
        tag, ordinal = slot
        (total,) = self._query(
            "SELECT COALESCE(SUM(tail - head), 0) FROM queue_lanes WHERE device_id = ?",
            (job.device_id,),
        )[0]
        params = (job.device_id, tag, job.project, ordinal)
        return self._count_ahead(_SLOT_BEFORE, _SLOT_AFTER, "queue_slots", params, int(total)) + 1

    def _slot_of(self, job: Job) -> tuple[float, int] | None:
        """(tag, ordinal) of the slot a queued job holds; None when it is not queued."""
        lane = self._query(
            "SELECT j.state, l.head, l.tail FROM jobs j JOIN queue_lanes l"
            " ON l.device_id = j.device_id AND l.project = j.project WHERE j.job_id = ?",
            (job.job_id,),
        )
        if not lane or lane[0][0] != JobState.QUEUED.value:
            return None
        head, tail = int(lane[0][1]), int(lane[0][2])
        where = f"{_LANE} AND "
        params = (job.device_id, job.project, job.place_at, job.job_id)
        rank = self._count_ahead(
            where + _BEFORE_KEY, where + _AFTER_KEY, "jobs", params, tail - head
        )
        found = self._query(
            "SELECT tag FROM queue_slots WHERE device_id = ? AND project = ? AND ordinal = ?",
            (job.device_id, job.project, head + rank),
        )
        return (float(found[0][0]), head + rank) if found else None

    def _count_ahead(
        self, before: str, after: str, table: str, params: Sequence[Any], total: int
    ) -> int:
        """Rows ordered before the given one among `total` (itself included): counted from
        the back when fewer than _BACK_COUNT_LIMIT lie behind it, else from the front."""
        (behind,) = self._query(
            f"SELECT COUNT(*) FROM (SELECT 1 FROM {table} WHERE {after} LIMIT ?) AS b",
            (*params, _BACK_COUNT_LIMIT),
        )[0]
        if int(behind) < _BACK_COUNT_LIMIT:
            return max(0, total - 1 - int(behind))
        (ahead,) = self._query(f"SELECT COUNT(*) FROM {table} WHERE {before}", params)[0]
        return int(ahead)
