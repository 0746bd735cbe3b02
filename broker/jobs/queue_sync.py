"""Keeping the scheduler's queue book in step with the store when other broker replicas
queue or take jobs: the store is the truth, and a device whose depth differs is re-read."""

from __future__ import annotations

from collections.abc import Iterable

from broker.jobs.model import Job, JobState
from broker.jobs.scheduler import Scheduler
from broker.store.runner import StoreRunner

# Most queued jobs of one device read back when re-syncing the scheduler with the store.
MAX_QUEUE_READ = 100_000
_PAGE = 1000


class QueueSync:
    def __init__(self, runner: StoreRunner, scheduler: Scheduler) -> None:
        self._runner = runner
        self._scheduler = scheduler

    async def load(self) -> None:
        """Fill the scheduler with every QUEUED job in the store (at start)."""
        self._scheduler.load(await self._queued_jobs())

    async def sync(self, device_ids: Iterable[str]) -> None:
        """Re-read the queue of every device whose depth in the store differs from ours."""
        depths = await self._runner.call(self._runner.store.queue_depths)
        for device_id in device_ids:
            if depths.get(device_id, 0) != self._scheduler.depth(device_id):
                queued = await self._runner.call(
                    self._runner.store.queued_jobs, device_id, MAX_QUEUE_READ
                )
                self._scheduler.replace_device(device_id, queued)

    async def _queued_jobs(self) -> list[Job]:
        """Every QUEUED job in the store, in pages, newest first."""
        found: list[Job] = []
        before: int | None = None
        while True:
            page = await self._runner.call(
                self._runner.store.list_jobs,
                states=[JobState.QUEUED],
                limit=_PAGE,
                before_seq=before,
            )
            found.extend(job for _, job in page)
            if len(page) < _PAGE:
                return found
            before = page[-1][0]
