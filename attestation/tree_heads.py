"""Signed tree heads of the audit log and witnesses' cosignatures on them, checked offline.

A checkpoint is the broker's DSSE-signed statement "the log's first `tree_size` entries have
RFC 6962 Merkle root `root_hash`, at time `at`": payload type `CHECKPOINT_PAYLOAD_TYPE`, payload
the canonical JSON `{"at": float, "root_hash": hex, "tree_size": int}`.

A cosignature is a witness's DSSE-signed statement, in the manner of Sigsum's cosignature/v1
and the transparency-dev witness: "at `witnessed_at` I had checked that the log signed by
`log_key_id` grew append-only up to this tree head". Payload type `COSIGNATURE_PAYLOAD_TYPE`,
payload the canonical JSON
`{"log_key_id": str, "root_hash": hex, "tree_size": int, "witnessed_at": float}`.
A witness cosigns a tree head only after checking a consistency proof from the last head it
cosigned, so one cosignature vouches for the whole history before it.

Both are parsed strictly (exact field set, no duplicate keys, lower-case hex), and only after
the signature verifies: nothing unsigned is ever believed.
"""

from __future__ import annotations

from dataclasses import dataclass

from attestation._json import (
    StrictJSONError,
    canonical_dumps,
    get_hex,
    get_int,
    get_number,
    get_str,
    object_with,
    strict_loads,
)
from attestation.dsse import Envelope, EnvelopeError, sign_envelope, verify_envelope
from attestation.keys import SigningKey, VerifyKey
from attestation.merkle_proofs import HASH_SIZE

CHECKPOINT_PAYLOAD_TYPE = "application/vnd.qtestbed.audit-checkpoint.v1+json"
COSIGNATURE_PAYLOAD_TYPE = "application/vnd.qtestbed.audit-cosignature.v1+json"
_CHECKPOINT_FIELDS = frozenset({"tree_size", "root_hash", "at"})
_COSIGNATURE_FIELDS = frozenset({"log_key_id", "tree_size", "root_hash", "witnessed_at"})


class TreeHeadError(ValueError):
    """A checkpoint or cosignature that does not verify or does not parse; says why."""


@dataclass(frozen=True, kw_only=True, slots=True)
class TreeHead:
    """What a verified checkpoint says."""

    tree_size: int
    root_hash: str  # 64 lower-case hex digits
    at: float


@dataclass(frozen=True, kw_only=True, slots=True)
class CosignedHead:
    """What a verified cosignature says, and whose key made it."""

    witness_key_id: str
    log_key_id: str
    tree_size: int
    root_hash: str
    witnessed_at: float


def open_checkpoint(envelope_json: bytes, log_key: VerifyKey) -> TreeHead:
    """The tree head a checkpoint envelope states, once its signature by `log_key` verifies."""
    payload = _verified_payload(envelope_json, log_key, CHECKPOINT_PAYLOAD_TYPE, "checkpoint")
    try:
        raw = object_with(strict_loads(payload), _CHECKPOINT_FIELDS, "checkpoint payload")
        return TreeHead(
            tree_size=get_int(raw, "tree_size"),
            root_hash=get_hex(raw, "root_hash", min_bytes=HASH_SIZE, max_bytes=HASH_SIZE).hex(),
            at=get_number(raw, "at"),
        )
    except StrictJSONError as exc:
        raise TreeHeadError(f"checkpoint: {exc}") from exc


def cosign(head: TreeHead, *, log_key_id: str, witnessed_at: float, key: SigningKey) -> bytes:
    """The witness's cosignature envelope (DSSE JSON) on `head` of the log `log_key_id`."""
    payload = canonical_dumps(
        {
            "log_key_id": log_key_id,
            "root_hash": head.root_hash,
            "tree_size": head.tree_size,
            "witnessed_at": float(witnessed_at),
        }
    )
    return sign_envelope(COSIGNATURE_PAYLOAD_TYPE, payload, key).to_json()


def open_cosignature(envelope_json: bytes, witness_key: VerifyKey) -> CosignedHead:
    """What a cosignature envelope states, once its signature by `witness_key` verifies."""
    payload = _verified_payload(envelope_json, witness_key, COSIGNATURE_PAYLOAD_TYPE, "cosignature")
    try:
        raw = object_with(strict_loads(payload), _COSIGNATURE_FIELDS, "cosignature payload")
        return CosignedHead(
            witness_key_id=witness_key.key_id,
            log_key_id=get_str(raw, "log_key_id"),
            tree_size=get_int(raw, "tree_size"),
            root_hash=get_hex(raw, "root_hash", min_bytes=HASH_SIZE, max_bytes=HASH_SIZE).hex(),
            witnessed_at=get_number(raw, "witnessed_at"),
        )
    except StrictJSONError as exc:
        raise TreeHeadError(f"cosignature: {exc}") from exc


def signer_key_ids(envelope_json: bytes) -> list[str]:
    """The key ids an envelope's signatures claim (unverified: only to pick a key to try)."""
    try:
        return [s.keyid for s in Envelope.from_json(envelope_json).signatures]
    except EnvelopeError:
        return []


def _verified_payload(envelope_json: bytes, key: VerifyKey, payload_type: str, what: str) -> bytes:
    try:
        envelope = Envelope.from_json(envelope_json)
    except EnvelopeError as exc:
        raise TreeHeadError(f"{what}: {exc}") from exc
    if envelope.payload_type != payload_type:
        raise TreeHeadError(
            f"{what}: payload type is {envelope.payload_type!r}, not {payload_type!r}"
        )
    if not verify_envelope(envelope, key):
        raise TreeHeadError(f"{what}: the signature does not verify with key {key.key_id[:16]}...")
    return envelope.payload
