"""Queue positions the scheduler's windows cannot count, read from the store for every caller
waiting on the same device in one call.

A change near the front of a deep queue moves every job behind it at once, and the WatchJob
streams on those jobs ask for their new positions together (paced to the same second). Asked
one by one, 1,500 such streams put 1,500 store calls ahead of everyone's submissions on the one
store thread, and admission then shed the submissions. Callers that ask within
`gather_seconds` of each other share one `queue_positions` read, whose cost grows with the span
of the queue they sit in, not with their number.
"""

from __future__ import annotations

import asyncio

from broker.jobs.model import Job
from broker.store.runner import StoreRunner

# Long enough for the streams woken by one change to ask together, short against the pace of
# position updates (a second by default).
GATHER_SECONDS = 0.005

_Waiters = dict[str, tuple[Job, list["asyncio.Future[int | None]"]]]


class StorePositions:
    def __init__(self, runner: StoreRunner, *, gather_seconds: float = GATHER_SECONDS) -> None:
        self._runner = runner
        self._gather = gather_seconds
        self._waiting: dict[str, _Waiters] = {}  # device -> job id -> (job, callers)
        self._reads: set[asyncio.Task[None]] = set()
        self.reads = 0  # store calls made (tests and diagnostics)

    async def position(self, job: Job) -> int | None:
        """The job's position as the store counts it (None: no longer queued)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int | None] = loop.create_future()
        waiting = self._waiting.get(job.device_id)
        if waiting is None:
            waiting = self._waiting[job.device_id] = {}
            task = loop.create_task(self._read(job.device_id))
            self._reads.add(task)
            task.add_done_callback(self._reads.discard)
        waiting.setdefault(job.job_id, (job, []))[1].append(future)
        return await future

    async def _read(self, device_id: str) -> None:
        waiting: _Waiters = {}
        try:
            await asyncio.sleep(self._gather)
            waiting = self._waiting.pop(device_id)
            self.reads += 1
            found = await self._runner.call(
                self._runner.store.queue_positions, device_id, _jobs_of(waiting)
            )
        except asyncio.CancelledError:  # the broker is stopping
            for future in _futures(waiting or self._waiting.pop(device_id, {})):
                future.cancel()
            raise
        except Exception as exc:  # e.g. the store is unavailable: every caller is told
            for future in _futures(waiting):
                if not future.done():
                    future.set_exception(exc)
            return
        for job_id, (_, futures) in waiting.items():
            for future in futures:
                if not future.done():
                    future.set_result(found[job_id])


def _jobs_of(waiting: _Waiters) -> list[Job]:
    return [job for job, _ in waiting.values()]


def _futures(waiting: _Waiters) -> list[asyncio.Future[int | None]]:
    return [future for _, futures in waiting.values() for future in futures]
