"""The leases a driver holds, run one at a time in the order they were granted.

A driver may ask for several leases at once (`max_leases` in its settings; the broker grants
at most its own limit), so the next job is already here when the device frees. The device
still runs one job at a time. A lease belongs to the connection that was granted it: when that
connection ends (the broker requeues everything it held) or the broker cancels the lease
(a researcher cancelled, the lease expired, or its grant no longer stands), the lease is marked
cancelled and, if it has not started, is never run.

While the device runs one lease, the driver does the rest of its work beside it: a grant's
circuit is checked and decoded when the grant arrives, and the finished lease's receipt is
signed and its answer sent while the next lease already runs (`Answers`). The device goes
from one job to the next without waiting on the driver's own bookkeeping.

The busy clock measures how much of the wall time between the first job's start and the last
one's end the device spent running jobs: the figure pipelining exists to raise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import zmq
import zmq.asyncio

from qtestbed.v1 import driver_link_pb2 as link_pb

log = logging.getLogger(__name__)


@dataclass(slots=True, eq=False)
class HeldLease:
    grant: link_pb.LeaseGrant
    # The connection it was granted on: its answers go there, and nowhere else.
    sock: zmq.asyncio.Socket
    cancelled: bool = False


# Runs the busy clock keeps one by one (start, end), newest last, for a report over a window.
_RUNS_KEPT = 20_000


@dataclass(slots=True)
class BusyClock:
    """Seconds the device spent running jobs, the span from first start to last end, and the
    latest runs one by one (so a report can leave out, say, a first run that paid setup)."""

    busy_seconds: float = 0.0
    jobs: int = 0
    # Leases that arrived to an empty queue (the device had run dry waiting for the broker):
    # next to `jobs`, whether the device waits on the broker or the broker on the device.
    starved: int = 0
    first_start: float | None = None
    last_end: float | None = None
    runs: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=_RUNS_KEPT))

    def record(self, began: float, ended: float) -> None:
        self.busy_seconds += ended - began
        self.jobs += 1
        self.first_start = began if self.first_start is None else self.first_start
        self.last_end = ended
        self.runs.append((began, ended))

    def report(self) -> dict[str, object]:
        span = (self.last_end - self.first_start) if self.first_start and self.last_end else 0.0
        return {
            "jobs": self.jobs,
            "busy_seconds": self.busy_seconds,
            "span_seconds": span,
            "busy_fraction": self.busy_seconds / span if span > 0 else 0.0,
            "starved_leases": self.starved,
            "runs": [[began, ended] for began, ended in self.runs],  # monotonic seconds
        }


Run = Callable[[HeldLease], Awaitable[None]]


class LeaseQueue:
    """Held leases in grant order, and the one worker that runs them."""

    def __init__(self, run: Run, limit: int, clock: BusyClock) -> None:
        self._run = run
        self._limit = limit
        self._clock = clock
        self._held: dict[str, HeldLease] = {}
        self._running: str = ""
        self._worker: asyncio.Task[None] | None = None

    @property
    def running_id(self) -> str:
        return self._running

    @property
    def idle(self) -> bool:
        """No lease held: the device may be asked about its calibration and health."""
        return not self._held

    def add(self, lease: HeldLease) -> bool:
        """Queue a lease; False when its connection already holds as many as allowed."""
        mine = [h for h in self._held.values() if h.sock is lease.sock and not h.cancelled]
        if len(mine) >= self._limit:
            return False
        self._held[lease.grant.lease_id] = lease
        if self._worker is None or self._worker.done():
            self._clock.starved += 1
            self._worker = asyncio.create_task(self._work())
        return True

    def cancel(self, lease_id: str, sock: zmq.asyncio.Socket) -> None:
        """The broker told this connection to drop the lease: it never starts, or its result
        is withheld if it already has."""
        lease = self._held.get(lease_id)
        if lease is not None and lease.sock is sock:
            lease.cancelled = True

    def end_connection(self, sock: zmq.asyncio.Socket) -> None:
        """The connection is gone and the broker gave its leases back: run none of them."""
        for lease in self._held.values():
            if lease.sock is sock:
                lease.cancelled = True

    async def _work(self) -> None:
        while self._held:
            lease_id, lease = next(iter(self._held.items()))
            self._running = lease_id
            try:
                with contextlib.suppress(zmq.ZMQError):  # its connection may have closed
                    await self._run(lease)
            finally:
                self._running = ""
                self._held.pop(lease_id, None)

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker


class Answers:
    """Answers to leases whose device run ended, signed and sent while the device runs the
    next lease. Each lease's own messages keep their order (its start went before its run;
    its answer follows the run); answers about different leases may pass each other's starts,
    which the broker handles side by side. At most one answer per lease held is in flight."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def post(self, answer: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(self._send(answer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _send(answer: Coroutine[Any, Any, None]) -> None:
        try:
            with contextlib.suppress(zmq.ZMQError):  # its connection may have closed
                await answer
        except Exception:
            log.exception("answering a lease failed; the broker requeues it when it expires")

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def drain(self) -> None:
        """Wait for every answer in flight (before the connection closes)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))
