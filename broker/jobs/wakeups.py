"""Devices whose queue should be looked at: the dispatcher's inbox.

Anything that may let a job move (a submission, an attestation, a session closing, an access
change) marks the device here; the dispatcher drains the marks. Keeping the inbox apart from
the dispatcher lets those services exist before it, without holding it.
"""

from __future__ import annotations

import asyncio


class DispatchWakeups:
    def __init__(self) -> None:
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()

    def kick(self, device_id: str) -> None:
        """Ask the dispatcher to look at this device's queue soon."""
        self._dirty.add(device_id)
        self._wake.set()

    async def wait(self) -> None:
        """Until some device was kicked since the last `take`."""
        await self._wake.wait()
        self._wake.clear()

    def take(self) -> str | None:
        """One kicked device, or None when none is left."""
        return self._dirty.pop() if self._dirty else None
