"""The front of one (device, project) lane, held in memory: the lane's first queued jobs in place
order and the tags of its first slots, at most `window` of each (see broker.jobs.scheduler).

The store holds the whole lane (broker.store.sql_queue); a window mirrors its front. The
scheduler applies each job change this broker writes to the window as the store applied it to
the lane, and reads more from the store when a window runs low. Reads and writes go through the
one store thread in order, and each write's change reaches the window before the result of any
read made after it, so a window read is applied on top of exactly the changes it saw: the
merge below keeps only what lies past the window's end when the read's answer arrives.
"""

from __future__ import annotations

import bisect

from broker.jobs.model import Job

Key = tuple[float, str]


def place_key(job: Job) -> Key:
    return (job.place_at, job.job_id)


class LaneWindow:
    __slots__ = ("device_id", "head", "jobs", "keys", "loaded", "project", "tags", "tail")

    def __init__(self, device_id: str, project: str, head: int, tail: int) -> None:
        self.device_id = device_id
        self.project = project
        self.head = head  # the lane's slot ordinals, head .. tail - 1, as the store has them
        self.tail = tail
        self.keys: list[Key] = []  # place keys of `jobs`, ascending
        self.jobs: list[Job] = []  # the lane's first jobs in place order
        self.tags: list[float] = []  # tags of slots head, head + 1, ...
        self.loaded = False  # windows read since the lane was last reset

    @property
    def depth(self) -> int:
        return self.tail - self.head

    def jobs_complete(self) -> bool:
        return self.loaded and len(self.jobs) == self.depth

    def tags_complete(self) -> bool:
        return self.loaded and len(self.tags) == self.depth

    def wants_read(self, window: int) -> bool:
        """Whether a window fell below half (or below the whole lane, when it is short)."""
        low = min(self.depth, max(1, window // 2))
        return not self.loaded or len(self.jobs) < low or len(self.tags) < low

    def reset(self, head: int, tail: int) -> None:
        """Forget the windows: the lane changed in ways this broker did not see."""
        self.head, self.tail = head, tail
        self.keys, self.jobs, self.tags = [], [], []
        self.loaded = False

    # --- merging reads --------------------------------------------------------------------

    def after_key(self) -> Key | None:
        return self.keys[-1] if self.keys else None

    def tags_end(self) -> int:
        """The ordinal just past the tag window."""
        return self.head + len(self.tags)

    def merge(self, jobs: list[Job], first: int, tags: list[float], window: int) -> None:
        """Add what a read found past the windows' ends (the read started at `first` for the
        tags, past the key the job window ended on when it was sent)."""
        last = self.after_key()
        for job in jobs:
            if len(self.jobs) >= window:
                break
            if last is None or place_key(job) > last:
                self.keys.append(place_key(job))
                self.jobs.append(job)
                last = self.keys[-1]
        skip = self.tags_end() - first
        if skip >= 0:
            self.tags.extend(tags[skip : skip + max(0, window - len(self.tags))])
        self.loaded = True

    # --- this broker's writes, as the store applied them ----------------------------------

    def entered(self, job: Job, window: int) -> None:
        """A job was queued (or queued again): the store added a slot at the tail."""
        complete = self.jobs_complete()
        self.tail += 1
        if not self.loaded:
            return
        key = place_key(job)
        if complete or (self.keys and key < self.keys[-1]):
            at = bisect.bisect_left(self.keys, key)
            self.keys.insert(at, key)
            self.jobs.insert(at, job)
            if len(self.jobs) > window:
                self.keys.pop()
                self.jobs.pop()
        # The new slot's tag is the store's to compute: a complete tag window now lacks it
        # and is read again before it is used.

    def index_of(self, job: Job) -> int | None:
        key = place_key(job)
        at = bisect.bisect_left(self.keys, key)
        return at if at < len(self.keys) and self.keys[at] == key else None

    def dispatched(self, job: Job) -> bool:
        """The store took the head slot; False when the window cannot follow (reset it)."""
        at = self.index_of(job)
        if self.loaded and at is None and self.jobs_complete():
            return False
        self.head += 1
        if at is not None:
            del self.keys[at], self.jobs[at]
        if self.tags:
            self.tags.pop(0)
        return True

    def left(self, job: Job) -> bool:
        """A queued job left early (the store gave back the tail slot); False when this broker
        cannot tell whether the job was queued here (reset the lane)."""
        at = self.index_of(job)
        if at is None and not self.jobs_complete():
            return False
        if at is None:
            return True  # it was not queued: nothing changed
        tags_complete = self.tags_complete()
        del self.keys[at], self.jobs[at]
        self.tail -= 1
        if tags_complete and self.tags:
            self.tags.pop()
        return True
