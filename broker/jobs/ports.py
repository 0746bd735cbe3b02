"""What the job services need from the driver link, as ports: the link sits above them, so
they see it only through these (the fleet and the lease keeper implement them)."""

from __future__ import annotations

from typing import Protocol

from broker.devices.model import DeviceProfile


class DriverView(Protocol):
    """The live drivers, as far as queue views and device selection need them."""

    def attested(self, device_id: str, now: float) -> bool:
        """Some connection of the device holds an affirming, unexpired attestation result."""

    def profile(self, device_id: str, now: float) -> DeviceProfile | None:
        """What an attested connection of the device announced; None when none is attested."""

    def lanes(self, device_id: str, per_job: float, now: float) -> tuple[float, int]:
        """(seconds until a busy device frees a driver, how many drivers it has)."""

    def runs_session(self, device_id: str, session_id: str) -> bool:
        """A driver of the device holds a job of this session."""


class LeaseCanceller(Protocol):
    async def cancel_lease(self, lease_id: str) -> None:
        """Tell the driver holding this lease to drop it (its job was cancelled)."""
