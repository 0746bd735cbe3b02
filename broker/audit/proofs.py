"""Inclusion proofs of job.completed entries in signed checkpoints, for researchers' bundles.

A researcher asks when they save a result bundle (`qtestbed result --save`), not when the job
completes: the proof is made against the newest stored checkpoint whose tree covers the entry,
so it also covers every entry signed since. When no checkpoint covers the entry yet (it was
written after the last one; the broker signs every `checkpoint_every_entries` entries or
`checkpoint_every_seconds`), the broker signs one on demand (`sign_now`, the periodic signer's
forced tick). That costs at most one signature per request that finds the tail uncovered, and
only when there are new entries; the signer's own checks run first, so a log that no longer
matches its checkpoints is never signed over, and the request then fails as unavailable.

The leaf hashes of the log are kept in memory (`LeafTree`: about 32 bytes an entry, read once
and then only the new ones, with the roots of its large perfect subtrees), so a proof costs
O(log² n) hashes and no re-reading of the log; the last proofs made are cached too. Before a
proof leaves, the signed root is recomputed from those hashes and the entry, re-read from the
store, must hash to the remembered leaf: the broker never hands out a proof that would not
verify, whatever was done to its database meanwhile.

A checkpoint a witness has cosigned is worth more to a researcher than one only the broker
signed: whoever holds the broker key (or the broker itself) could show them a forked log, but
not one a pinned witness checked to be append-only. So the proof is made against the newest
covering checkpoint with a cosignature from a currently registered witness, and carries those
cosignatures; only when no covering checkpoint is witnessed yet is the newest broker-signed one
served, with no cosignatures (the researcher saves the bundle again later to get a witnessed
one). Cosignatures are looked up on every request, not cached with the path: a witness may
cosign a checkpoint after a proof against it was first made.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from broker.audit.leaf_tree import LeafTree
from broker.audit.merkle import audit_leaf, leaf_hash
from broker.audit.model import AuditEntry, Checkpoint
from broker.audit.verify import iter_entries
from broker.audit.witnesses import CosignatureDesk
from broker.errors import BrokerError, ErrorCode
from broker.store.runner import StoreRunner

_CACHED_PROOFS = 256


@dataclass(frozen=True, kw_only=True, slots=True)
class EntryProof:
    """An RFC 6962 inclusion proof of one audit entry in a signed checkpoint."""

    entry: bytes  # the leaf bytes (`audit_leaf`)
    leaf_index: int
    tree_size: int
    audit_path: tuple[bytes, ...]
    checkpoint: bytes  # the DSSE envelope (JSON)
    # Registered witnesses' cosignature envelopes (DSSE JSON) on that checkpoint; empty when
    # no covering checkpoint is witnessed yet.
    cosignatures: tuple[bytes, ...] = ()

    @property
    def witnessed(self) -> bool:
        return bool(self.cosignatures)


class InclusionProofs:
    def __init__(
        self,
        *,
        runner: StoreRunner,
        sign_now: Callable[[], Awaitable[None]],
        cosignatures: CosignatureDesk,
    ) -> None:
        self._runner = runner
        self._cosignatures = cosignatures
        self._sign_now = sign_now
        self._tree = LeafTree()
        self._completed: dict[str, int] = {}  # job id -> seq of its job.completed entry
        self._proofs: OrderedDict[tuple[int, int], EntryProof] = OrderedDict()
        self._lock = asyncio.Lock()

    async def completed_entry(self, job_id: str) -> EntryProof:
        """The proof for the job's job.completed entry; BrokerError UNAVAILABLE when the log
        cannot prove it now (the caller has already checked the job is theirs and COMPLETED)."""
        async with self._lock:
            await self._runner.call(self._catch_up)
            seq = self._completed.get(job_id)
            if seq is None:
                raise _unavailable(f"the audit log holds no job.completed entry for job {job_id}")
            covering = await self._covering(seq)
            if covering is None:
                await self._sign_now()
                covering = await self._covering(seq)
            if covering is None:
                raise _unavailable(
                    "no signed audit checkpoint covers this result yet; try again in a minute"
                )
            checkpoint, cosignatures = covering
            key = (seq, checkpoint.tree_size)
            proof = self._proofs.get(key)
            if proof is None:
                proof = await self._prove(seq, checkpoint)
                self._proofs[key] = proof
                if len(self._proofs) > _CACHED_PROOFS:
                    self._proofs.popitem(last=False)
            return replace(proof, cosignatures=cosignatures)

    def _catch_up(self) -> None:
        """On the store thread: hash the entries written since the last call."""
        for entry in iter_entries(self._runner.store, after_seq=self._tree.size):
            self._remember(entry)

    def _remember(self, entry: AuditEntry) -> None:
        if entry.seq != self._tree.size + 1:
            raise _unavailable("the audit log has a gap; the security team has to verify it")
        try:
            self._tree.append_hash(leaf_hash(audit_leaf(entry)))
        except ValueError as exc:  # a row an honest broker never writes
            raise _unavailable(f"audit entry seq {entry.seq} is damaged ({exc})") from exc
        if entry.event.kind == "job.completed" and entry.event.subject:
            self._completed.setdefault(entry.event.subject, entry.seq)

    async def _covering(self, seq: int) -> tuple[Checkpoint, tuple[bytes, ...]] | None:
        """The newest stored checkpoint whose tree holds entry `seq` and the hashes read,
        witnessed if any such is, with its registered witnesses' cosignatures."""
        await self._runner.call(self._catch_up)
        size = self._tree.size
        usable = [
            (c, tuple(s.envelope for s in sorted(cosigs, key=lambda s: s.witness)))
            for c, cosigs in await self._cosignatures.checkpoints(
                min_tree_size=seq, registered_only=True
            )
            if c.tree_size <= size
        ]
        witnessed = [(c, cosigs) for c, cosigs in usable if cosigs]
        return max(witnessed or usable, key=lambda pair: pair[0].tree_size, default=None)

    async def _prove(self, seq: int, checkpoint: Checkpoint) -> EntryProof:
        batch = await self._runner.call(
            self._runner.store.audit_entries, after_seq=seq - 1, limit=1
        )
        if not batch or batch[0].seq != seq:
            raise _unavailable(f"audit entry seq {seq} cannot be read")
        leaf = audit_leaf(batch[0])
        if leaf_hash(leaf) != self._tree.leaf(seq - 1):
            raise _unavailable(f"audit entry seq {seq} changed since the broker read it")
        if self._tree.root(checkpoint.tree_size).hex() != checkpoint.root_hash:
            raise _unavailable(
                f"the audit log no longer matches the checkpoint of tree size "
                f"{checkpoint.tree_size}; the security team has to verify it"
            )
        path = self._tree.path(seq - 1, checkpoint.tree_size)
        return EntryProof(
            entry=leaf,
            leaf_index=seq - 1,
            tree_size=checkpoint.tree_size,
            audit_path=tuple(path),
            checkpoint=checkpoint.envelope,
        )


def _unavailable(why: str) -> BrokerError:
    return BrokerError(ErrorCode.UNAVAILABLE, f"no audit inclusion proof: {why}")
