"""Signed audit checkpoints: the broker's DSSE-signed statement "the log's first `tree_size`
entries have RFC 6962 Merkle root `root_hash`", made at time `at`.

The signed payload is canonical JSON `{"at": ..., "root_hash": ..., "tree_size": ...}` under
the payload type `CHECKPOINT_PAYLOAD_TYPE`, so a signature made for a receipt or for evidence
can never pass as a checkpoint. The `Checkpoint` columns beside the envelope are a copy for
queries; `verify_checkpoint` checks that they say what the signed payload says.
"""

from __future__ import annotations

from attestation._json import (
    StrictJSONError,
    canonical_dumps,
    get_hex,
    get_int,
    get_number,
    object_with,
    strict_loads,
)
from attestation.dsse import Envelope, EnvelopeError, sign_envelope, verify_envelope
from attestation.keys import SigningKey, VerifyKey
from attestation.tree_heads import CHECKPOINT_PAYLOAD_TYPE as CHECKPOINT_PAYLOAD_TYPE
from broker.audit.merkle import HASH_SIZE, is_hash_hex
from broker.audit.model import Checkpoint

_FIELDS = frozenset({"tree_size", "root_hash", "at"})


def checkpoint_payload(tree_size: int, root_hash: str, at: float) -> bytes:
    """The exact bytes a checkpoint signs (canonical JSON)."""
    return canonical_dumps({"tree_size": tree_size, "root_hash": root_hash, "at": float(at)})


def sign_checkpoint(tree_size: int, root_hash: str, at: float, key: SigningKey) -> Checkpoint:
    """Sign that the log's first `tree_size` entries have Merkle root `root_hash` (hex)."""
    if tree_size < 0:
        raise ValueError(f"tree size {tree_size} is negative")
    if not is_hash_hex(root_hash):
        raise ValueError("root_hash must be 64 lower-case hex digits")
    payload = checkpoint_payload(tree_size, root_hash, at)
    envelope = sign_envelope(CHECKPOINT_PAYLOAD_TYPE, payload, key)
    return Checkpoint(
        tree_size=tree_size,
        root_hash=root_hash,
        at=float(at),
        key_id=key.public_key.key_id,
        envelope=envelope.to_json(),
    )


def verify_checkpoint(checkpoint: Checkpoint, key: VerifyKey) -> list[str]:
    """Every reason `checkpoint` is not a valid statement by `key`; empty when it is.

    Checks the envelope parses, carries the checkpoint payload type and a signature by `key`,
    that the payload is exactly {tree_size, root_hash, at}, and that the stored columns equal
    the signed values (so a query on the columns sees what was signed).
    """
    where = f"checkpoint of tree size {checkpoint.tree_size}"
    try:
        envelope = Envelope.from_json(checkpoint.envelope)
    except EnvelopeError as exc:
        return [f"{where}: {exc}"]
    problems: list[str] = []
    if envelope.payload_type != CHECKPOINT_PAYLOAD_TYPE:
        problems.append(
            f"{where}: payload type is {envelope.payload_type!r}, not {CHECKPOINT_PAYLOAD_TYPE!r}"
        )
    if checkpoint.key_id != key.key_id:
        problems.append(f"{where}: key id {checkpoint.key_id[:16]}... is not the broker key's")
    if not verify_envelope(envelope, key):
        problems.append(f"{where}: the signature does not verify with the broker key")
    problems.extend(_payload_problems(checkpoint, envelope.payload, where))
    return problems


def _payload_problems(checkpoint: Checkpoint, payload: bytes, where: str) -> list[str]:
    try:
        raw = object_with(strict_loads(payload), _FIELDS, "checkpoint payload")
        tree_size = get_int(raw, "tree_size")
        root_hash = get_hex(raw, "root_hash", min_bytes=HASH_SIZE, max_bytes=HASH_SIZE).hex()
        at = get_number(raw, "at")
    except StrictJSONError as exc:
        return [f"{where}: {exc}"]
    problems = []
    if tree_size != checkpoint.tree_size:
        problems.append(f"{where}: the signed tree size is {tree_size}")
    if root_hash != checkpoint.root_hash:
        problems.append(f"{where}: the signed root is {root_hash}, not {checkpoint.root_hash}")
    if at != checkpoint.at:
        problems.append(f"{where}: signed at {at}, but the stored time is {checkpoint.at}")
    return problems
