"""Witnesses' cosignatures on the broker's checkpoints: who may cosign, and what was cosigned.

A witness is registered by the operator: a name and the witness's public key in the broker's
settings (`[witnesses]` in broker.toml, name = path of the PEM public key). A cosignature is
accepted only over the audit service from a security-role principal, only if it verifies with a
registered key, names this broker's checkpoint key as the log, and cosigns exactly a checkpoint
this broker stored (same tree size and root). A cosignature of a root this broker never signed
for that size means the witness saw another head of the same size: a fork, counted as
`root_mismatch` and audited.

Accepted cosignatures are appended to the audit log itself (`audit.cosigned`, the envelope in
the detail), so they are chained and checkpointed like everything else, every replica sees
them, and no table of their own can be edited apart from the log. The book is rebuilt from the
log: it reads only the entries after the last one it read.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from attestation.keys import VerifyKey
from attestation.tree_heads import TreeHeadError, open_cosignature, signer_key_ids
from broker.audit.log import AuditLog
from broker.audit.model import AuditEntry, Checkpoint
from broker.audit.stored import iter_stored
from broker.errors import BrokerError, ErrorCode
from broker.metrics import BrokerMetrics
from broker.store.runner import StoreRunner

COSIGNED = "audit.cosigned"
REFUSED = "audit.cosignature_refused"


@dataclass(frozen=True, kw_only=True, slots=True)
class StoredCosignature:
    witness: str
    key_id: str
    tree_size: int
    root_hash: str
    witnessed_at: float
    envelope: bytes


class WitnessKeys:
    """The registered witnesses: name -> public key."""

    def __init__(self, keys: Mapping[str, VerifyKey] | None = None) -> None:
        self._by_id = {key.key_id: (name, key) for name, key in (keys or {}).items()}

    @classmethod
    def load(cls, files: Mapping[str, Path]) -> WitnessKeys:
        """Read each witness's PEM public key; ValueError naming the witness otherwise."""
        keys: dict[str, VerifyKey] = {}
        for name, path in files.items():
            try:
                # A public key only: the broker never holds a witness's private key.
                public = serialization.load_pem_public_key(path.read_bytes())
                keys[name] = VerifyKey.from_cryptography(public)
            except (OSError, ValueError, TypeError) as exc:
                raise ValueError(f"witness {name!r}: cannot load public key {path}: {exc}") from exc
        return cls(keys)

    def find(self, key_ids: list[str]) -> tuple[str, VerifyKey] | None:
        return next((self._by_id[k] for k in key_ids if k in self._by_id), None)

    def registered(self, name: str, key_id: str) -> bool:
        found = self._by_id.get(key_id)
        return found is not None and found[0] == name


class CosignatureDesk:
    """Takes cosignatures from witnesses and answers which witnesses cosigned each checkpoint."""

    def __init__(
        self,
        *,
        runner: StoreRunner,
        audit: AuditLog,
        witnesses: WitnessKeys,
        log_key_id: str,
        metrics: BrokerMetrics,
    ) -> None:
        self._runner = runner
        self._audit = audit
        self._witnesses = witnesses
        self._log_key_id = log_key_id
        self._metrics = metrics
        self._lock = threading.Lock()
        self._read_through = 0
        self._book: dict[int, dict[str, StoredCosignature]] = {}

    async def checkpoints(
        self, *, min_tree_size: int = 0, registered_only: bool = False
    ) -> list[tuple[Checkpoint, list[StoredCosignature]]]:
        """The stored checkpoints of at least `min_tree_size`, each with its cosignatures
        (with `registered_only`, only those by a witness key registered now: a witness the
        operator removed no longer vouches for anything handed to researchers)."""
        await self.refresh()
        stored = await self._runner.call(self._runner.store.checkpoints)
        with self._lock:
            return [
                (
                    c,
                    [
                        s
                        for s in self._book.get(c.tree_size, {}).values()
                        if not registered_only or self._witnesses.registered(s.witness, s.key_id)
                    ],
                )
                for c in stored
                if c.tree_size >= min_tree_size
            ]

    async def add(self, caller: str, tree_size: int, envelope: bytes) -> tuple[str, bool]:
        """Check and record a witness's cosignature; (witness name, whether it was new)."""
        found = self._witnesses.find(signer_key_ids(envelope))
        if found is None:
            await self._refuse(caller, tree_size, "unknown_witness")
            raise BrokerError(
                ErrorCode.PERMISSION_DENIED,
                "the cosignature is not signed by a registered witness key; an operator "
                "registers a witness's public key under [witnesses] in broker.toml",
            )
        name, key = found
        try:
            head = open_cosignature(envelope, key)
        except TreeHeadError as exc:
            await self._refuse(caller, tree_size, "bad_signature", witness=name)
            raise BrokerError(ErrorCode.INVALID_ARGUMENT, f"cosignature refused: {exc}") from None
        if head.log_key_id != self._log_key_id or head.tree_size != tree_size:
            await self._refuse(caller, tree_size, "wrong_log", witness=name)
            raise BrokerError(
                ErrorCode.INVALID_ARGUMENT,
                "the cosignature is for another log or another tree size than the request's",
            )
        stored = {c.tree_size: c for c in await self._runner.call(self._runner.store.checkpoints)}
        mine = stored.get(tree_size)
        if mine is None:
            await self._refuse(caller, tree_size, "no_such_checkpoint", witness=name)
            raise BrokerError(ErrorCode.NOT_FOUND, f"no checkpoint of tree size {tree_size}")
        if mine.root_hash != head.root_hash:
            await self._refuse(
                caller, tree_size, "root_mismatch", witness=name, root_hash=head.root_hash
            )
            raise BrokerError(
                ErrorCode.FAILED_PRECONDITION,
                f"this broker's checkpoint of tree size {tree_size} has another root than the "
                "one cosigned: the witness saw a different head of this size (a fork)",
            )
        await self.refresh()
        with self._lock:
            if name in self._book.get(tree_size, {}):
                self._metrics.cosignatures.labels("duplicate").inc()
                return name, False
        detail = {
            "witness": name,
            "key_id": key.key_id,
            "tree_size": tree_size,
            "root_hash": head.root_hash,
            "witnessed_at": head.witnessed_at,
            "envelope": envelope.decode(),
        }
        entry = await self._audit.record(COSIGNED, caller, f"checkpoint:{tree_size}", detail)
        self._observe(entry)
        self._metrics.cosignatures.labels("accepted").inc()
        return name, True

    async def refresh(self) -> None:
        """Read the cosignatures appended since the last refresh (by any replica)."""
        await self._runner.call(self._read_new)

    def _read_new(self) -> None:
        for row in iter_stored(self._runner.store, after_seq=self._read_through):
            if isinstance(row, AuditEntry):
                self._observe(row)
            self._read_through = max(self._read_through, row.seq)

    def _observe(self, entry: AuditEntry) -> None:
        if entry.event.kind != COSIGNED:
            return
        d = entry.event.detail
        try:
            cosig = StoredCosignature(
                witness=str(d["witness"]),
                key_id=str(d["key_id"]),
                tree_size=int(d["tree_size"]),
                root_hash=str(d["root_hash"]),
                witnessed_at=float(d["witnessed_at"]),
                envelope=str(d["envelope"]).encode(),
            )
        except (KeyError, TypeError, ValueError):
            return  # not one this broker wrote; `audit verify` judges the log itself
        with self._lock:
            self._book.setdefault(cosig.tree_size, {})[cosig.witness] = cosig

    async def _refuse(self, caller: str, tree_size: int, reason: str, **detail: str) -> None:
        self._metrics.cosignatures.labels(reason).inc()
        await self._audit.record(
            REFUSED, caller, f"checkpoint:{tree_size}", {"reason": reason, **detail}
        )
