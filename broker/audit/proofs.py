"""RFC 6962 consistency proofs over the stored audit log, for witnesses and auditors.

The proof is built from the leaf hashes of the log as stored now: if the store was rewritten
since a witness last cosigned, the proof cannot reach the witness's old root, and the witness
raises its alarm. Each call reads the first `second_size` entries once (O(n) time, O(n)
hashes of memory); witnesses ask once per new checkpoint.
"""

from __future__ import annotations

from attestation.merkle_proofs import leaf_hash
from broker.audit.merkle import audit_leaf, consistency_proof
from broker.audit.stored import MalformedRow, iter_stored
from broker.errors import BrokerError, ErrorCode, invalid
from broker.store.runner import StoreRunner


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
        hashes = await self._runner.call(self._leaf_hashes, second_size)
        if len(hashes) < second_size:
            raise BrokerError(
                ErrorCode.NOT_FOUND,
                f"the audit log holds {len(hashes)} entries, fewer than {second_size}",
            )
        return consistency_proof(first_size, hashes)

    def _leaf_hashes(self, count: int) -> list[bytes]:
        hashes: list[bytes] = []
        if count == 0:
            return hashes
        for row in iter_stored(self._runner.store):
            if isinstance(row, MalformedRow):
                raise BrokerError(
                    ErrorCode.FAILED_PRECONDITION,
                    f"the stored audit log is damaged at seq {row.seq}; an operator should "
                    "run 'qtestbed audit verify'",
                )
            try:
                hashes.append(leaf_hash(audit_leaf(row)))
            except ValueError as exc:
                raise BrokerError(
                    ErrorCode.FAILED_PRECONDITION,
                    f"the stored audit log is damaged at seq {row.seq} ({exc})",
                ) from None
            if len(hashes) == count:
                break
        return hashes
