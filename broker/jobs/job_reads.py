"""Reads of jobs by id: the callers that ask while a read is on the store thread go together
in the next store call.

Opening a WatchJob stream, GetJob and CancelJob each read their job first. One principal
opening 1,500 streams at once put 1,500 store calls ahead of everyone's submissions, and
admission shed those as overload. With reads joined, an idle store answers a read at once, and a
busy one takes one call per turn of its thread however many reads wait.
"""

from __future__ import annotations

import asyncio

from broker.jobs.model import Job
from broker.store.runner import StoreRunner

_Key = tuple[str, str | None]  # (job id, owner the read is limited to, or None)
_Waiting = dict[_Key, list["asyncio.Future[Job | None]"]]


class JobReads:
    def __init__(self, runner: StoreRunner) -> None:
        self._runner = runner
        self._waiting: _Waiting = {}
        self._reader: asyncio.Task[None] | None = None
        self.calls = 0  # store calls made (tests and diagnostics)

    async def get(self, job_id: str, owner: str | None) -> Job | None:
        """`store.get_job(job_id, owner=owner)`, read with whatever else is waiting."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Job | None] = loop.create_future()
        self._waiting.setdefault((job_id, owner), []).append(future)
        if self._reader is None:
            self._reader = loop.create_task(self._read())
        return await future

    async def _read(self) -> None:
        batch: _Waiting = {}
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, {}
                keys = list(batch)
                self.calls += 1
                try:
                    found = await self._runner.call(self._runner.store.get_jobs, keys)
                except Exception as exc:  # e.g. the store is unavailable: each caller is told
                    for future in _futures(batch):
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for key, job in zip(keys, found, strict=True):
                    for future in batch[key]:
                        if not future.done():
                            future.set_result(job)
                batch = {}
        except asyncio.CancelledError:  # the broker is stopping
            for future in _futures(batch) + _futures(self._waiting):
                future.cancel()
            raise
        finally:
            self._reader = None


def _futures(waiting: _Waiting) -> list[asyncio.Future[Job | None]]:
    return [future for futures in waiting.values() for future in futures]
