"""Whether the store is answering, told once per outage rather than once per call.

The store thread reports every batch: a batch whose transaction could not even commit means
the database is away (PostgreSQL down or restarting, the SQLite file locked past the busy
timeout or unwritable). The first such batch starts an outage, logged once with the
database's own words; the next batch that commits ends it, logged once with how long it lasted.
Listeners (the gauge on /metrics) hear each change, not each call.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class EndedOutage:
    seconds: float
    failed_calls: int  # store calls that failed during it


class StoreHealth:
    def __init__(self, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._failed_calls = 0  # store calls that failed during the current outage
        self.outages = 0
        self._ended: list[EndedOutage] = []  # ended outages not yet audited (see `ended`)
        self._listeners: list[Callable[[bool], None]] = []

    @property
    def available(self) -> bool:
        return self._down_since is None

    def on_change(self, listener: Callable[[bool], None]) -> None:
        """Call `listener(available)` now and at every change (on the store thread)."""
        self._listeners.append(listener)
        listener(self.available)

    def failed(self, exc: BaseException, calls: int) -> None:
        """A batch of `calls` store calls failed as a whole: the store is away."""
        with self._lock:
            self._failed_calls += calls
            if self._down_since is not None:
                return
            self._down_since = self._monotonic()
            self.outages += 1
        log.warning(
            "store outage began: %s; calls answer UNAVAILABLE with retry advice until it is back",
            exc,
        )
        self._tell(False)

    def answered(self) -> None:
        """A batch committed: the store is back, if it was away."""
        with self._lock:
            if self._down_since is None:
                return
            lasted = self._monotonic() - self._down_since
            failed, self._down_since, self._failed_calls = self._failed_calls, None, 0
            self._ended.append(EndedOutage(seconds=lasted, failed_calls=failed))
        log.warning(
            "store outage ended after %.1f s (%d store calls failed meanwhile)", lasted, failed
        )
        self._tell(True)

    def ended(self) -> list[EndedOutage]:
        """Outages that ended and are not yet audited, oldest first."""
        with self._lock:
            return list(self._ended)

    def audited(self, outage: EndedOutage) -> None:
        """`outage` is in the audit log now: no need to keep it."""
        with self._lock:
            self._ended.remove(outage)

    def _tell(self, available: bool) -> None:
        for listener in self._listeners:
            listener(available)
