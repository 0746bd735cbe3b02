"""A broker running on its own event loop in a background thread of this process.

For the demo, tests and benchmarks: blocking clients can call it from the main thread while
it serves. Drivers still run as separate processes.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from typing import Any

from broker.app import Broker, BrokerAddresses
from broker.settings import BrokerSettings


class EmbeddedBroker:
    def __init__(self, settings: BrokerSettings) -> None:
        self.settings = settings
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="qtestbed-broker", daemon=True
        )
        self.broker: Broker | None = None

    def start(self, timeout: float = 30.0) -> BrokerAddresses:
        self._thread.start()
        self.broker = Broker(self.settings)
        addresses: BrokerAddresses = self.run(self.broker.start(), timeout)
        return addresses

    def run(self, coro: Any, timeout: float = 30.0) -> Any:
        """Run a coroutine on the broker's loop and wait for its result."""
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        if self.broker is not None:
            self.run(self.broker.stop(), timeout)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        self._loop.close()

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
