"""Driver-link messages about different leases handled side by side, those about one in order.

With several leases in flight, one lease's result and the next one's start arrive back to back;
handled one after the other, each waits for the other's store write. Handled side by side, the
store runner commits them (and the dispatcher's next lease write) in one transaction. Messages
about one lease keep their order (a start is written before its result), and only leases a
connection holds get a lane, so the number of lanes is bounded by the leases granted; past
`limit` a message is handled in line, which holds the link's reader back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable

log = logging.getLogger(__name__)

Work = Callable[[], Awaitable[None]]


class LeaseLanes:
    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._tails: dict[Hashable, asyncio.Task[None]] = {}

    async def submit(self, lane: Hashable, work: Work) -> None:
        """Run `work` after the lane's earlier work; in line when too many lanes are busy."""
        previous = self._tails.get(lane)
        if previous is None and len(self._tails) >= self._limit:
            await work()
            return
        task = asyncio.create_task(self._after(previous, work))
        self._tails[lane] = task
        task.add_done_callback(lambda done: self._forget(lane, done))

    async def _after(self, previous: asyncio.Task[None] | None, work: Work) -> None:
        if previous is not None:
            await asyncio.wait([previous])  # its failure is its own; this one still runs
        try:
            await work()
        except Exception:
            log.exception("handling a lease message failed")

    def _forget(self, lane: Hashable, done: asyncio.Task[None]) -> None:
        if self._tails.get(lane) is done:
            del self._tails[lane]

    async def drain(self) -> None:
        """Wait for every lane's work (for a clean stop)."""
        while self._tails:
            await asyncio.wait(list(self._tails.values()))
