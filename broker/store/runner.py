"""Runs a synchronous Store on one dedicated thread, with group commit.

Calls made while the store thread is busy queue up; the thread then runs all of them inside
one `store.batch()` transaction and settles their futures only after it commits. Every caller
still gets its answer only once its write is durable, but a burst of N submissions costs one
fsync instead of N. One thread also gives SQLite its single writer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from broker.store.base import BrokerStore
from broker.store.health import StoreHealth

P = ParamSpec("P")
T = TypeVar("T")

_Pending = tuple[Callable[[], Any], "asyncio.Future[Any]", asyncio.AbstractEventLoop]


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():  # the caller was cancelled; the work is done (and durable) regardless
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


def _settle_all(settled: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in settled:
        _settle(future, ok, value)


class StoreRunner:
    """`await runner.call(store.method, *args)` runs the method on the store's own thread."""

    def __init__(self, store: BrokerStore) -> None:
        self.store = store
        self.health = StoreHealth()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="qtestbed-store"
        )
        self._lock = threading.Lock()
        self._pending: list[_Pending] = []
        self._scheduled = False
        self._depth = 0  # calls queued or running, not yet settled
        self.batches = 0
        self.calls = 0

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._lock:
            self._pending.append((functools.partial(fn, *args, **kwargs), future, loop))
            self._depth += 1
            if not self._scheduled:
                self._scheduled = True
                self._executor.submit(self._drain)
        return await future

    @property
    def depth(self) -> int:
        """Store calls waiting for the store thread or running on it: when this grows, every
        caller's latency grows with it (admission sheds submissions past a bound)."""
        return self._depth

    def _drain(self) -> None:
        """On the store thread: run everything queued so far in one transaction."""
        with self._lock:
            batch, self._pending = self._pending, []
            self._scheduled = False
        outcomes: list[tuple[bool, Any]] = []
        try:
            with self.store.batch():
                for op, _future, _loop in batch:
                    try:
                        outcomes.append((True, op()))
                    except Exception as exc:
                        outcomes.append((False, exc))
        except Exception as exc:  # the commit itself failed: nothing in the batch is durable
            outcomes = [(False, exc)] * len(batch)
            self.health.failed(exc, len(batch))
        else:
            self.health.answered()
        self.batches += 1
        self.calls += len(batch)
        with self._lock:
            self._depth -= len(batch)
        # One wake-up per event loop for the whole batch: each call_soon_threadsafe writes to
        # the loop's self-pipe, which releases and retakes the GIL on this thread, and under
        # load each retake waits for the busy event loop; per call, that wait is paid N times.
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]]
        by_loop = {}
        for (_op, future, loop), (ok, value) in zip(batch, outcomes, strict=True):
            by_loop.setdefault(loop, []).append((future, ok, value))
        for loop, settled in by_loop.items():
            loop.call_soon_threadsafe(_settle_all, settled)

    def close(self) -> None:
        self._executor.submit(self.store.close).result()
        self._executor.shutdown(wait=True)
