"""RFC 6962 consistency proofs over the stored audit log, for witnesses and auditors.

The proof is built from the leaf hashes of the log as stored now: if the store was rewritten
since a witness last cosigned, the proof cannot reach the witness's old root, and the witness
raises its alarm. Each call reads the first `second_size` entries once (O(n) time, O(n)
hashes of memory), read a page at a time so the store's thread is never held for long;
witnesses ask once per new checkpoint. (Keeping the interior hashes would make it O(log n).)
"""

from __future__ import annotations

import asyncio
from typing import Any

from attestation.merkle_proofs import leaf_hash
from broker.audit.merkle import audit_leaf, consistency_proof
from broker.audit.stored import MalformedEntry, entry_from_stored
from broker.errors import BrokerError, ErrorCode, invalid
from broker.store.runner import StoreRunner

_PAGE = 1000


class ConsistencyProver:
    def __init__(self, runner: StoreRunner) -> None:
        self._runner = runner

    async def proof(self, first_size: int, second_size: int) -> list[bytes]:
        """PROOF(first_size, D[second_size]); refuses sizes the log does not hold."""
        if not 0 <= first_size <= second_size:
            raise invalid(
                f"first_size {first_size} must be at most second_size {second_size}: a "
                "consistency proof runs from an older tree to a newer one"
            )
        hashes = await self._leaf_hashes(second_size)
        if len(hashes) < second_size:
            raise BrokerError(
                ErrorCode.NOT_FOUND,
                f"the audit log holds {len(hashes)} entries, fewer than {second_size}",
            )
        return await asyncio.to_thread(consistency_proof, first_size, hashes)

    async def _leaf_hashes(self, count: int) -> list[bytes]:
        """The first `count` leaf hashes, a page per store call so that writes interleave, and
        hashed off the event loop."""
        hashes: list[bytes] = []
        after = 0
        while len(hashes) < count:
            limit = min(_PAGE, count - len(hashes))
            rows = await self._runner.call(
                self._runner.store.audit_rows, after_seq=after, limit=limit
            )
            if not rows:
                break
            hashes += await asyncio.to_thread(_hash_page, rows)
            after = int(rows[-1][0])
        return hashes


def _hash_page(rows: list[tuple[Any, ...]]) -> list[bytes]:
    hashes = []
    for raw in rows:
        try:
            entry = entry_from_stored(raw)
            hashes.append(leaf_hash(audit_leaf(entry)))
        except (MalformedEntry, ValueError) as exc:
            raise BrokerError(
                ErrorCode.FAILED_PRECONDITION,
                f"the stored audit log is damaged ({exc}); an operator should run "
                "'qtestbed audit verify'",
            ) from None
    return hashes
