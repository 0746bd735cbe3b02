"""Which broker process dispatches a device's jobs: the one holding the device's dispatch right.

Where several processes share one store (replicas, or the worker processes of one broker), a
device's jobs are leased by one of them only: the process that holds an attested connection of
the device and, through the store, the device's right (`broker.store.pg_rights`: a PostgreSQL
session advisory lock, freed by PostgreSQL the moment that process's session ends). A process
without the right leaves the queue alone; the jobs it accepts reach the holder as the store's
change notifications. The right is about who works the queue, not about safety: every lease and
result is still a compare-and-set on the job's version, so a job is leased and completed once
even in the moment two processes both believe they hold it (a lost session, say).

A broker alone on its store holds every right (`SoleRights`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from broker.devices.model import DeviceProfile
from broker.link.fleet import Fleet


class DispatchRights(Protocol):
    async def claim(self, device_id: str) -> bool:
        """Hold the device's right from now on; False while another process holds it."""

    async def review(self, keep: Callable[[str], bool]) -> None:
        """Give back each right held whose device `keep` no longer wants (no attested driver
        here now), and look again which devices another process dispatches."""

    def elsewhere(self, device_id: str) -> bool:
        """Another process held the device's right at the last review: it has an attested
        driver there, so the device is available although no driver is connected here."""

    async def close(self) -> None:
        """Give back every right (the broker stops)."""


class SoleRights:
    """The only broker on its store: every device is dispatched here, none elsewhere."""

    async def claim(self, device_id: str) -> bool:
        return True

    async def review(self, keep: Callable[[str], bool]) -> None:
        return None

    def elsewhere(self, device_id: str) -> bool:
        return False

    async def close(self) -> None:
        return None


class SharedDriverView:
    """The fleet's view of the drivers (`broker.jobs.ports.DriverView`), where a device whose
    driver is attested in another process sharing the store (it holds the device's right)
    counts as attested here too: a call that process's sibling answers sees the device as the
    process holding the driver does. What a driver announced (its profile) and how busy it is
    stay known only where it is connected."""

    def __init__(self, fleet: Fleet, rights: DispatchRights) -> None:
        self._fleet = fleet
        self._rights = rights

    def attested(self, device_id: str, now: float) -> bool:
        return self._fleet.attested(device_id, now) or self._rights.elsewhere(device_id)

    def profile(self, device_id: str, now: float) -> DeviceProfile | None:
        return self._fleet.profile(device_id, now)

    def lanes(self, device_id: str, per_job: float, now: float) -> tuple[float, int]:
        return self._fleet.lanes(device_id, per_job, now)

    def runs_session(self, device_id: str, session_id: str) -> bool:
        return self._fleet.runs_session(device_id, session_id)
