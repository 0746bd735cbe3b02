"""The security team's read of the audit log: its entries, live, and its signed checkpoints."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from broker.audit.model import AuditEntry, Checkpoint
from broker.store.runner import StoreRunner

_AUDIT_PAGE = 500


class AuditReader:
    def __init__(self, runner: StoreRunner, *, poll_seconds: float = 0.5) -> None:
        self._runner = runner
        self._poll_seconds = poll_seconds

    async def checkpoints(self) -> list[Checkpoint]:
        return await self._runner.call(self._runner.store.checkpoints)

    async def stream(self, after_seq: int, follow: bool) -> AsyncIterator[AuditEntry]:
        """Entries after `after_seq`; with `follow`, keep polling for new ones."""
        store = self._runner.store
        while True:
            page = await self._runner.call(
                store.audit_entries, after_seq=after_seq, limit=_AUDIT_PAGE
            )
            for entry in page:
                yield entry
                after_seq = entry.seq
            if len(page) < _AUDIT_PAGE:
                if not follow:
                    return
                await asyncio.sleep(self._poll_seconds)
