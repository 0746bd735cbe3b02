"""Fair, bounded circuit validation: each principal may have only its share of the decoder
pool busy at once, and decoding waits run on a dedicated executor, never asyncio's default one.

A principal past its share is refused at once (RESOURCE_EXHAUSTED with a retry delay) rather
than queued: queued work would still delay everyone behind it. A place in the share is held
until the decode finishes, whether or not its caller is still waiting, so a principal's decodes
running or waiting for a decoder child never number more than its share. The refusal is counted
(`qtestbed_decode_refusals_total{reason}`) and audited in aggregate (`decode.refused`, one entry
per principal per window), since a flood of them is exactly what a hostile caller produces.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from broker.audit.refusals import RefusalLog
from broker.errors import BrokerError, resource_exhausted
from broker.metrics import BrokerMetrics
from qtestbed.shared.circuits import DecodeDeadline

T = TypeVar("T")

# The pool's size when the machine decides it: one child per CPU, within these bounds. Two at
# least, so that one principal's share (half, rounded up) never takes the whole pool.
MIN_PROCESSES = 2
MAX_PROCESSES = 16
SHARE_REFUSED = "principal_share"


@dataclass(frozen=True, kw_only=True, slots=True)
class DecodingSettings:
    """[decoding] in broker.toml: the decoder pool, each principal's share, payload deadlines."""

    # Decoder children; 0 means one per CPU (os.cpu_count()), between 2 and 16.
    processes: int = 0
    # Payloads one principal may have in decoding at once; 0 means half the pool, rounded up.
    per_principal: int = 0
    # A payload may take deadline_base_seconds + deadline_per_kib_seconds per KiB to decode;
    # past that its child is killed and replaced (OpenQASM 3 takes about 0.02 s per KiB).
    deadline_base_seconds: float = 2.0
    deadline_per_kib_seconds: float = 0.05
    # The retry delay a principal past its share is given.
    retry_after_seconds: float = 1.0

    def __post_init__(self) -> None:
        if not 0 <= self.processes <= MAX_PROCESSES:
            raise ValueError(f"[decoding] processes must be 0 (auto) to {MAX_PROCESSES}")
        if self.per_principal < 0:
            raise ValueError("[decoding] per_principal must be 0 (half the pool) or more")
        if self.retry_after_seconds <= 0:
            raise ValueError("[decoding] retry_after_seconds must be positive")
        self.deadline()  # checks the deadline's parts

    def pool_size(self) -> int:
        if self.processes:
            return self.processes
        return min(max(os.cpu_count() or 1, MIN_PROCESSES), MAX_PROCESSES)

    def share(self) -> int:
        """Payloads one principal may have in decoding at once: half the pool unless the
        operator set it. A share set past the pool is allowed (a facility that trusts its
        users, or a benchmark): decodes beyond the pool then wait for a child, not refused."""
        return self.per_principal or math.ceil(self.pool_size() / 2)

    def deadline(self) -> DecodeDeadline:
        return DecodeDeadline(
            base_s=self.deadline_base_seconds, per_kib_s=self.deadline_per_kib_seconds
        )


class DecodeGate:
    """Admits a principal's decode if it is within its share, and runs it on the executor.

    Used from the event loop only (the in-flight counts need no lock)."""

    def __init__(
        self,
        *,
        settings: DecodingSettings,
        metrics: BrokerMetrics,
        refusals: RefusalLog,
    ) -> None:
        self._share = settings.share()
        self._retry_after = settings.retry_after_seconds
        self._metrics = metrics
        self._refusals = refusals
        self._in_flight: dict[str, int] = {}
        # Every admitted decode gets a thread: at most one share per principal waits for the
        # pool, the rest of the threads are for other principals (and in-process OpenQASM 2).
        self._executor = ThreadPoolExecutor(
            max_workers=2 * settings.pool_size(), thread_name_prefix="decode"
        )

    @property
    def share(self) -> int:
        return self._share

    def in_flight(self, principal: str) -> int:
        return self._in_flight.get(principal, 0)

    async def run(self, principal: str, decode: Callable[[], T]) -> T:
        """Run `decode` for `principal` on the decode executor, or refuse it if the principal
        already has its share of decodes in flight.

        The share is held until the decode itself is done, not until this call stops waiting
        for it: a caller that cancels (or whose deadline passes) while its payload is still
        being decoded keeps that place taken, so cancelling and resubmitting cannot put more
        than a share of one principal's payloads in the pool, or in the queue for it. A decode
        cancelled before a thread took it never runs, and its place frees at once."""
        held = self._in_flight.get(principal, 0)
        if held >= self._share:
            raise self._refuse(principal, held)
        self._in_flight[principal] = held + 1
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[T] = loop.create_future()
        try:
            work = self._executor.submit(decode)
        except BaseException:
            self._release(principal)
            raise
        work.add_done_callback(lambda done: self._finish_from(loop, principal, done, answer))
        # Cancelling this await cancels `work` too, which succeeds only if it has not started.
        answer.add_done_callback(lambda waited: work.cancel() if waited.cancelled() else None)
        return await answer

    def _finish_from(
        self,
        loop: asyncio.AbstractEventLoop,
        principal: str,
        work: Future[T],
        answer: asyncio.Future[T],
    ) -> None:
        """From whichever thread finished the decode: free the place and hand over the answer
        on the event loop, in one wake-up of the loop (each wake-up from a decode thread
        costs that thread a wait for the GIL while the loop is busy)."""
        # A closed loop (the broker stopped) raises RuntimeError: then there is nothing to free.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._finish, principal, work, answer)

    def _finish(self, principal: str, work: Future[T], answer: asyncio.Future[T]) -> None:
        self._release(principal)
        if answer.done():  # the caller stopped waiting
            return
        if work.cancelled():
            answer.cancel()
            return
        error = work.exception()
        if error is not None:
            answer.set_exception(error)
        else:
            answer.set_result(work.result())

    def _release(self, principal: str) -> None:
        left = self._in_flight[principal] - 1
        if left:
            self._in_flight[principal] = left
        else:
            del self._in_flight[principal]

    async def flush(self, *, force: bool = False) -> None:
        """Audit the window's refusals (on the tick; at shutdown with `force`)."""
        await self._refusals.flush(force=force)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _refuse(self, principal: str, held: int) -> BrokerError:
        self._metrics.decode_refusals.labels(SHARE_REFUSED).inc()
        self._refusals.tally(SHARE_REFUSED, principal)
        return resource_exhausted(
            f"{held} of your circuits are being validated, your share of this broker's "
            "decoders; wait for a submission to return before sending the next",
            self._retry_after,
            rule_id="decode.principal_share",
        )
