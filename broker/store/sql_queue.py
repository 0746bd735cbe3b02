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
import bisect
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
_JOB_KEY = "place_at, job_id"
_SLOT_KEY = "tag, project, ordinal"
# Rows one range read of `queue_positions` takes at most.
_RANGE_CHUNK = 4096
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
        found = self._read_lane_row(cur, device_id, project)
        if found is not None:  # the common case: one statement, not three
            return found
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
        made = self._read_lane_row(cur, device_id, project)
        if made is None:  # both rows exist now, inserted here or by another writer
            raise RuntimeError(f"queue lane ({device_id}, {project}) missing after its insert")
        return made

    def _read_lane_row(
        self, cur: Cursor, device_id: str, project: str
    ) -> tuple[float, int, int, float] | None:
        cur.execute(
            "SELECT c.virtual_time, l.head, l.tail, l.last_tag FROM queue_lanes l"
            " JOIN queue_clocks c ON c.device_id = l.device_id"
            " WHERE l.device_id = ? AND l.project = ?",
            (device_id, project),
        )
        row = cur.fetchone()
        if row is None:
            return None
        vt, head, tail, last = row
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
        return self.queue_positions(job.device_id, [job])[job.job_id]

    def queue_positions(
        self, device_id: str, jobs: Sequence[Job], *, chunk: int = _RANGE_CHUNK
    ) -> dict[str, int | None]:
        """Positions of many jobs of one device: per run of nearby jobs one count and one
        range read (of at most `chunk` rows), not two counts per job, so the streams on a
        deep queue cost the store a few reads per change however many they are."""
        lanes = {
            str(project): (int(head), int(tail))
            for project, head, tail in self._query(
                "SELECT project, head, tail FROM queue_lanes WHERE device_id = ?", (device_id,)
            )
        }
        slots: dict[tuple[Any, ...], str] = {}
        for project, group in _by_project(jobs).items():
            head, tail = lanes.get(project, (0, 0))
            keys = sorted((job.place_at, job.job_id) for job in group)
            ranks = self._ranks(
                "jobs", _LANE, (device_id, project), _JOB_KEY, keys, tail - head, chunk
            )
            ordinals = sorted(head + rank for rank in ranks.values())
            tags = self._lane_tags(device_id, project, ordinals, chunk)
            for (_, job_id), rank in ranks.items():
                tag = tags.get(head + rank)
                if tag is not None:
                    slots[(tag, project, head + rank)] = job_id
        total = sum(tail - head for head, tail in lanes.values())
        ahead = self._ranks(
            "queue_slots", "device_id = ?", (device_id,), _SLOT_KEY, sorted(slots), total, chunk
        )
        found = {slots[key]: rank + 1 for key, rank in ahead.items()}
        return {job.job_id: found.get(job.job_id) for job in jobs}

    def _lane_tags(
        self, device_id: str, project: str, ordinals: Sequence[int], chunk: int
    ) -> dict[int, float]:
        """Tags of a lane's slots at these (sorted) ordinals, by ranges of at most `chunk`."""
        tags: dict[int, float] = {}
        index = 0
        while index < len(ordinals):
            first = ordinals[index]
            last = min(first + chunk - 1, ordinals[-1])
            for ordinal, tag in self._query(
                "SELECT ordinal, tag FROM queue_slots WHERE device_id = ? AND project = ?"
                " AND ordinal BETWEEN ? AND ?",
                (device_id, project, first, last),
            ):
                tags[int(ordinal)] = float(tag)
            index = bisect.bisect_right(ordinals, last, lo=index)
        return tags

    def _ranks(
        self,
        table: str,
        where: str,
        params: tuple[Any, ...],
        columns: str,
        keys: Sequence[tuple[Any, ...]],
        total: int,
        chunk: int = _RANGE_CHUNK,
    ) -> dict[tuple[Any, ...], int]:
        """0-based rank, among `table`'s rows matching `where` ordered by `columns` (`total`
        of them), of each of the sorted `keys` that is such a row; keys that are not are left
        out. Keys close together share one count and one range read, which reads the rows
        between them only."""
        marks = ", ".join("?" * len(keys[0])) if keys else ""
        ranks: dict[tuple[Any, ...], int] = {}
        index = 0
        while index < len(keys):
            # From the first key not yet placed to the last key: a lone key reads one row.
            found = self._query(
                f"SELECT {columns} FROM {table} WHERE {where} AND ({columns}) >= ({marks})"
                f" AND ({columns}) <= ({marks}) ORDER BY {columns} LIMIT ?",
                (*params, *keys[index], *keys[-1], chunk),
            )
            if not found:
                break  # no key left is a row
            rows = [_like(keys[index], row) for row in found]
            start = self._count_ahead(
                f"{where} AND ({columns}) < ({marks})",
                f"{where} AND ({columns}) > ({marks})",
                table,
                (*params, *rows[0]),
                total,
            )
            at = {row: start + offset for offset, row in enumerate(rows)}
            while index < len(keys) and keys[index] <= rows[-1]:
                if keys[index] in at:
                    ranks[keys[index]] = at[keys[index]]
                index += 1
            if len(found) < chunk:
                break  # every row up to the last key was read: the keys left are not rows
        return ranks

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


def _by_project(jobs: Sequence[Job]) -> dict[str, list[Job]]:
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.project, []).append(job)
    return groups


def _like(key: tuple[Any, ...], row: Sequence[Any]) -> tuple[Any, ...]:
    """A row's key with the key's types (a driver may hand back another numeric type)."""
    return tuple(type(part)(value) for part, value in zip(key, row, strict=True))
