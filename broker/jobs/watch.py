"""In-process fan-out of job changes to WatchJob streams."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from broker.jobs.model import Job

# A watcher that falls this far behind only needs the newest news; older items are dropped.
_QUEUE_LIMIT = 64


@dataclass(eq=False, slots=True)
class Subscription:
    """Receives the job itself when it changes, or None when its device's queue moved."""

    job_id: str
    device_id: str
    queue: asyncio.Queue[Job | None] = field(
        default_factory=lambda: asyncio.Queue(maxsize=_QUEUE_LIMIT)
    )

    def offer(self, item: Job | None) -> None:
        if self.queue.full():
            self.queue.get_nowait()
        self.queue.put_nowait(item)


class JobWatchers:
    """Publishes saved jobs, and queue movements, to the streams watching them."""

    def __init__(self) -> None:
        self._subs: set[Subscription] = set()

    def publish(self, job: Job) -> None:
        for sub in self._subs:
            if sub.job_id == job.job_id:
                sub.offer(job)
            elif sub.device_id == job.device_id:
                sub.offer(None)  # a job ahead may have left the queue: positions moved

    @contextlib.contextmanager
    def subscribe(self, job_id: str, device_id: str) -> Iterator[Subscription]:
        sub = Subscription(job_id=job_id, device_id=device_id)
        self._subs.add(sub)
        try:
            yield sub
        finally:
            self._subs.discard(sub)
