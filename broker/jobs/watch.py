"""In-process fan-out of job changes to WatchJob streams, from memory.

A change reaches only the streams it can concern: the stream watching that job, and the
streams on the same device whose queue position the change can have moved (the scheduler
says from which position on). A stream then builds its view from the job it was handed and the
scheduler's in-memory order, never from the store: one change costs no store read per watcher.

Slow consumers are coalesced, not queued: a subscription holds only the newest version of its
job and a "news" flag, so a watcher that stops reading costs one job's memory however
many changes it misses, never delays the publisher, and gets the latest state when it reads
again (a job watcher only needs the latest state). Position-only updates are paced (the job's
own changes go at once): each stream sends at most one per `position_every`, and all of one
principal's streams together at most `principal_rate` a second, so a churning queue costs a
bounded message rate however many streams one principal opens; every position sent is exact
when sent."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from broker.jobs.model import Job

# Queue positions moved on these devices, from this 1-based position on (the scheduler's
# `take_moves`): a stream whose job sat ahead of it cannot have moved.
QueueMoves = Callable[[], Mapping[str, int]]

# Until a stream has sent its first view, any move may concern it.
_UNSENT = 1 << 62


@dataclass(eq=False, slots=True)
class Subscription:
    """One stream's pending news: the newest version of its job, and whether positions moved."""

    job_id: str
    device_id: str
    # Seconds a stream waits after a position-only update before the next (a queue that churns
    # costs each watcher a bounded rate of messages, not one per change); asked at each send.
    position_every: Callable[[], float] = lambda: 0.0
    # The queue position this stream last sent (0 when its job is not queued).
    sent_position: int = _UNSENT
    # The version of the job this stream last sent: a version no newer is no news (another
    # replica's changes make the ledger publish every watched job of a device again).
    sent_version: int = -1
    _job: Job | None = None
    _moved: bool = False
    _quiet_until: float = 0.0
    _timer: asyncio.TimerHandle | None = None
    _ready: asyncio.Event = field(default_factory=asyncio.Event)

    def offer_job(self, job: Job) -> None:
        if job.version <= self.sent_version:
            return
        if self._job is None or job.version >= self._job.version:
            self._job = job
        self._ready.set()

    def offer_move(self) -> None:
        """The stream's position may have moved: it is woken now, or, inside its pace, once
        when the pace runs out (not on every change: 1,500 paced streams on a churning queue
        would otherwise wake 1,500 tasks per change only to put them back to sleep)."""
        self._moved = True
        loop = asyncio.get_running_loop()
        if loop.time() >= self._quiet_until:
            self._ready.set()
        elif self._timer is None:
            # On the whole second after the pace ends: streams whose paces end within the same
            # second wake together, so their store-counted positions are read in one call.
            self._timer = loop.call_at(math.ceil(self._quiet_until), self._pace_over)

    def _pace_over(self) -> None:
        self._timer = None
        if self._moved:
            self._ready.set()

    @property
    def pending_job(self) -> bool:
        """Whether a newer version of the job waits to be taken (diagnostics, tests)."""
        return self._job is not None

    @property
    def pending(self) -> bool:
        return self._ready.is_set() or self._moved

    def sent(self, position: int, *, version: int) -> None:
        """The stream sent a view of this version of its job, with this position; a view of
        the version it sent before is a position-only update, paced."""
        moved_only = version == self.sent_version
        self.sent_position = position
        self.sent_version = version
        if moved_only:
            self._quiet_until = asyncio.get_running_loop().time() + self.position_every()

    async def next(self) -> Job | None:
        """Wait for news; the newest version of the job if it changed, else None (it moved)."""
        await self._ready.wait()
        self._ready.clear()
        job, self._job = self._job, None
        if self._timer is not None:  # the move it was armed for is taken now
            self._timer.cancel()
            self._timer = None
        if job is None and self._moved:
            # Woken by a move alone: the pace starts now, not when the new position is sent.
            # Reading that position can take a while (the store counts a deep job's), and the
            # moves arriving meanwhile must wait out the pace rather than wake the stream again
            # the moment it is sent (each stream then re-read and re-sent its position after
            # every read, paced by nothing but the store's speed).
            self._quiet_until = asyncio.get_running_loop().time() + self.position_every()
        self._moved = False
        return job

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class JobWatchers:
    """Publishes saved jobs, and queue movements, to the streams they concern."""

    def __init__(
        self, moves: QueueMoves, *, position_every: float = 0.0, principal_rate: float = 50.0
    ) -> None:
        self._moves = moves
        self._position_every = position_every
        self._principal_rate = principal_rate
        self._by_job: dict[str, set[Subscription]] = {}
        self._by_device: dict[str, set[Subscription]] = {}
        self._per_principal: dict[str, int] = {}  # open subscriptions by principal

    def publish(self, job: Job) -> None:
        for sub in self._by_job.get(job.job_id, ()):
            sub.offer_job(job)
        for device_id, start in self._moves().items():
            for sub in self._by_device.get(device_id, ()):
                if sub.sent_position >= start and sub.job_id != job.job_id:
                    sub.offer_move()

    @contextlib.contextmanager
    def subscribe(self, job_id: str, device_id: str, principal: str) -> Iterator[Subscription]:
        sub = Subscription(
            job_id=job_id, device_id=device_id, position_every=lambda: self.pace_of(principal)
        )
        self._by_job.setdefault(job_id, set()).add(sub)
        self._by_device.setdefault(device_id, set()).add(sub)
        self._per_principal[principal] = self._per_principal.get(principal, 0) + 1
        try:
            yield sub
        finally:
            sub.close()
            _discard(self._by_job, job_id, sub)
            _discard(self._by_device, device_id, sub)
            left = self._per_principal[principal] - 1
            if left:
                self._per_principal[principal] = left
            else:
                del self._per_principal[principal]

    def pace_of(self, principal: str) -> float:
        """Seconds each of the principal's streams waits between position-only updates."""
        streams = self._per_principal.get(principal, 0)
        return max(self._position_every, streams / self._principal_rate)

    def watched_on(self, device_id: str) -> set[str]:
        """The jobs of this device some stream watches."""
        return {sub.job_id for sub in self._by_device.get(device_id, ())}

    def pending_for(self, job_id: str) -> bool:
        """Whether any stream on this job has news it has not taken (diagnostics, tests)."""
        return any(sub.pending for sub in self._by_job.get(job_id, ()))

    def __len__(self) -> int:
        return sum(len(subs) for subs in self._by_job.values())


def _discard(index: dict[str, set[Subscription]], key: str, sub: Subscription) -> None:
    subs = index.get(key)
    if subs is not None:
        subs.discard(sub)
        if not subs:
            del index[key]
