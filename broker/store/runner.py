"""Runs a synchronous Store on one dedicated thread so its I/O never blocks the event loop.

One thread per store also gives SQLite its single writer: calls are serialized in the order
the event loop made them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from broker.store.base import BrokerStore

P = ParamSpec("P")
T = TypeVar("T")


class StoreRunner:
    """`await runner.call(store.method, *args)` runs the method on the store's own thread."""

    def __init__(self, store: BrokerStore) -> None:
        self.store = store
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="qtestbed-store"
        )

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        self._executor.submit(self.store.close).result()
        self._executor.shutdown(wait=True)
