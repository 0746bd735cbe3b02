"""Offline check that an audit entry is in the facility's signed audit log (RFC 6962 / 9162).

A researcher's result bundle carries an `InclusionProof`: the exact leaf bytes of the job's
`job.completed` audit entry, its leaf index, the tree size, the audit path and the broker's
signed checkpoint of that tree size. `verify_inclusion_proof` needs nothing but the facility's
audit signing key (the broker certificate's public key, pinned by the researcher): it checks
the checkpoint's signature, that the path leads from the entry to the signed root, and that the
entry says this job completed on this device with these shots and these counts.

This module stands alone (the broker is never imported), so `qtestbed receipt verify` runs
without the broker's code; the broker's own tree code is `broker/audit/merkle.py`, and a unit
test checks that both agree. The leaf and checkpoint formats are the broker's:

* leaf = seq (8 bytes, big-endian) || prev_hash (32 bytes) || canonical event JSON
  `{"actor","at","detail","kind","subject"}` (sorted keys, compact); leaf index = seq - 1;
* checkpoint = DSSE envelope over canonical JSON `{"at","root_hash","tree_size"}` with payload
  type `CHECKPOINT_PAYLOAD_TYPE`.

Every encoding is checked to be the one canonical spelling (envelope, payload, event JSON), so
no two byte strings of a proof mean the same thing: any changed byte makes it fail.

A proof may also carry witnesses' cosignatures on its checkpoint (`cosignatures`, DSSE
envelopes); they are checked against witness keys the researcher pins, in
`attestation/checkpoint_witnesses.py`. Proofs saved before witnessed proofs existed carry none.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from attestation._json import StrictJSONError, canonical_dumps, strict_loads
from attestation.dsse import Envelope, EnvelopeError, verify_envelope
from attestation.keys import VerifyKey
from attestation.receipts import result_digest

CHECKPOINT_PAYLOAD_TYPE = "application/vnd.qtestbed.audit-checkpoint.v1+json"
HASH_SIZE = 32
# A path longer than this cannot belong to a tree of at most 2**64 leaves.
MAX_PATH = 64
# More witnesses than a facility registers; the cap bounds what a bundle makes us parse.
MAX_COSIGNATURES = 32
_SEQ_BYTES = 8
_HEX = frozenset("0123456789abcdef")
_EVENT_FIELDS = frozenset({"kind", "actor", "subject", "at", "detail"})
_CHECKPOINT_FIELDS = frozenset({"tree_size", "root_hash", "at"})
# cosignatures and witnessed are absent from bundles saved before witnessed proofs.
_PROOF_FIELDS = frozenset(
    {"entry", "leaf_index", "tree_size", "audit_path", "checkpoint", "cosignatures", "witnessed"}
)


class ProofFormatError(ValueError):
    """An inclusion proof could not be read; the message names the field."""


@dataclass(frozen=True, kw_only=True, slots=True)
class InclusionProof:
    """Everything needed to show one audit entry is in a signed tree head."""

    entry: bytes  # the leaf bytes, exactly as hashed
    leaf_index: int
    tree_size: int
    audit_path: tuple[bytes, ...]
    checkpoint: bytes  # the DSSE envelope (JSON) the broker signed
    # Witnesses' cosignature envelopes (DSSE JSON) on that checkpoint; empty: unwitnessed.
    cosignatures: tuple[bytes, ...] = ()

    @property
    def witnessed(self) -> bool:
        return bool(self.cosignatures)

    def to_dict(self) -> dict[str, Any]:
        return {
            "entry": _b64(self.entry),
            "leaf_index": self.leaf_index,
            "tree_size": self.tree_size,
            "audit_path": [p.hex() for p in self.audit_path],
            "checkpoint": _b64(self.checkpoint),
            "cosignatures": [_b64(c) for c in self.cosignatures],
            # For the reader of the file; `receipt verify --witness-key` checks the cosignatures.
            "witnessed": self.witnessed,
        }

    @classmethod
    def from_dict(cls, raw: object) -> InclusionProof:
        """Parse the bundle's `audit_inclusion` object, accepting only canonical spellings."""
        if not isinstance(raw, Mapping):
            raise ProofFormatError("audit_inclusion must be an object")
        unknown = set(raw) - _PROOF_FIELDS
        if unknown:
            raise ProofFormatError(f"audit_inclusion has unknown fields {sorted(unknown)}")
        path = raw.get("audit_path")
        if not isinstance(path, list) or len(path) > MAX_PATH:
            raise ProofFormatError(f"audit_path must be a list of at most {MAX_PATH} hashes")
        cosigs = raw.get("cosignatures", [])  # absent in bundles saved before witnessing
        if not isinstance(cosigs, list) or len(cosigs) > MAX_COSIGNATURES:
            raise ProofFormatError(
                f"cosignatures must be a list of at most {MAX_COSIGNATURES} envelopes"
            )
        proof = cls(
            entry=_unb64(raw.get("entry"), "entry"),
            leaf_index=_count(raw.get("leaf_index"), "leaf_index"),
            tree_size=_count(raw.get("tree_size"), "tree_size"),
            audit_path=tuple(_hash(p, f"audit_path[{i}]") for i, p in enumerate(path)),
            checkpoint=_unb64(raw.get("checkpoint"), "checkpoint"),
            cosignatures=tuple(_unb64(c, f"cosignatures[{i}]") for i, c in enumerate(cosigs)),
        )
        if raw.get("witnessed", proof.witnessed) is not proof.witnessed:
            raise ProofFormatError("witnessed must say whether cosignatures is non-empty")
        return proof


@dataclass(frozen=True, kw_only=True, slots=True)
class AuditedEntry:
    """A decoded leaf: the audit entry's position, link and event."""

    seq: int
    prev_hash: str
    kind: str
    actor: str
    subject: str
    at: float
    detail: Mapping[str, Any]


@dataclass(frozen=True, kw_only=True, slots=True)
class ExpectedCompletion:
    """What the job.completed entry must say for this bundle."""

    job_id: str
    device_id: str
    shots: int
    counts: Mapping[str, int]


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def _node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_from_path(index: int, tree_size: int, leaf: bytes, path: Sequence[bytes]) -> bytes | None:
    """RFC 9162 §2.1.3.2: the root `path` leads to from leaf hash `leaf`, or None when the path
    does not fit a tree of `tree_size` leaves (too short, too long, index out of range)."""
    if not 0 <= index < tree_size:
        return None
    fn, sn = index, tree_size - 1
    r = leaf
    for p in path:
        if sn == 0 or len(p) != HASH_SIZE:
            return None
        if fn & 1 or fn == sn:
            r = _node_hash(p, r)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = _node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def decode_entry(leaf: bytes) -> AuditedEntry:
    """Split leaf bytes into seq, prev_hash and event; ProofFormatError unless canonical."""
    if len(leaf) <= _SEQ_BYTES + HASH_SIZE:
        raise ProofFormatError("entry is too short to hold seq, prev_hash and an event")
    seq = int.from_bytes(leaf[:_SEQ_BYTES], "big")
    prev = leaf[_SEQ_BYTES : _SEQ_BYTES + HASH_SIZE].hex()
    body = leaf[_SEQ_BYTES + HASH_SIZE :]
    try:
        event = strict_loads(body)
    except StrictJSONError as exc:
        raise ProofFormatError(f"entry event: {exc}") from exc
    if not isinstance(event, dict) or set(event) != _EVENT_FIELDS:
        raise ProofFormatError(f"entry event must hold exactly {sorted(_EVENT_FIELDS)}")
    if _canonical(event) != body:
        raise ProofFormatError("entry event is not in canonical JSON")
    kind, actor, subject, at, detail = (
        event[k] for k in ("kind", "actor", "subject", "at", "detail")
    )
    if not all(isinstance(v, str) for v in (kind, actor, subject)):
        raise ProofFormatError("entry kind, actor and subject must be strings")
    if not isinstance(at, float) or not isinstance(detail, dict):
        raise ProofFormatError("entry at must be a number and detail an object")
    return AuditedEntry(
        seq=seq, prev_hash=prev, kind=kind, actor=actor, subject=subject, at=at, detail=detail
    )


def verify_inclusion_proof(
    proof: InclusionProof, key: VerifyKey, expected: ExpectedCompletion
) -> list[str]:
    """Every reason `proof` does not show, under `key`, that the job completed as `expected`
    says; empty when it does."""
    problems, root = _checkpoint_root(proof, key)
    computed = root_from_path(
        proof.leaf_index, proof.tree_size, leaf_hash(proof.entry), proof.audit_path
    )
    if computed is None:
        problems.append(
            f"the audit path does not fit leaf {proof.leaf_index} of a tree of {proof.tree_size}"
        )
    elif root is not None and computed != root:
        problems.append("the audit path does not lead from the entry to the signed root")
    try:
        entry = decode_entry(proof.entry)
    except ProofFormatError as exc:
        return [*problems, f"audit entry unreadable: {exc}"]
    if entry.seq != proof.leaf_index + 1:
        problems.append(f"the entry is seq {entry.seq}, not leaf {proof.leaf_index} + 1")
    return problems + _completion_problems(entry, expected)


def _checkpoint_root(proof: InclusionProof, key: VerifyKey) -> tuple[list[str], bytes | None]:
    """Problems with the signed checkpoint, and the root it signs (None if unusable)."""
    try:
        envelope = Envelope.from_json(proof.checkpoint)
    except EnvelopeError as exc:
        return [f"checkpoint unreadable: {exc}"], None
    problems: list[str] = []
    if envelope.to_json() != proof.checkpoint:
        problems.append("checkpoint envelope is not in canonical form")
    if envelope.payload_type != CHECKPOINT_PAYLOAD_TYPE:
        problems.append(f"checkpoint payload type is {envelope.payload_type!r}")
    if len(envelope.signatures) != 1 or not verify_envelope(envelope, key):
        problems.append(f"checkpoint is not signed (alone) by the audit key {key.key_id[:16]}...")
    try:
        payload = strict_loads(envelope.payload)
    except StrictJSONError as exc:
        return [*problems, f"checkpoint payload: {exc}"], None
    if not isinstance(payload, dict) or set(payload) != _CHECKPOINT_FIELDS:
        return [
            *problems,
            f"checkpoint payload must hold exactly {sorted(_CHECKPOINT_FIELDS)}",
        ], None
    if _canonical(payload) != envelope.payload:
        problems.append("checkpoint payload is not in canonical JSON")
    if payload["tree_size"] != proof.tree_size:
        problems.append(
            f"the checkpoint signs a tree of {payload['tree_size']}, "
            f"the proof says {proof.tree_size}"
        )
    root_hex = payload["root_hash"]
    if not isinstance(root_hex, str) or len(root_hex) != 2 * HASH_SIZE or not set(root_hex) <= _HEX:
        return [*problems, "checkpoint root_hash is not 64 lower-case hex digits"], None
    return problems, bytes.fromhex(root_hex)


def _completion_problems(entry: AuditedEntry, expected: ExpectedCompletion) -> list[str]:
    where = f"audit entry seq {entry.seq}"
    if entry.kind != "job.completed" or entry.subject != expected.job_id:
        return [f"{where} is {entry.kind} of {entry.subject!r}, not job.completed of this job"]
    problems = []
    detail = entry.detail
    if detail.get("device") != expected.device_id:
        problems.append(f"{where} records device {detail.get('device')!r}")
    if detail.get("shots") != expected.shots:
        problems.append(f"{where} records {detail.get('shots')!r} shots")
    try:
        digest = result_digest(expected.counts)
    except ValueError as exc:
        return [*problems, f"the bundle's counts cannot be digested: {exc}"]
    if "result_digest" not in detail:
        problems.append(f"{where} predates result digests in the log: it cannot vouch for counts")
    elif detail["result_digest"] != digest:
        problems.append(f"{where} records other counts than the bundle's (result digest differs)")
    return problems


def _canonical(value: Any) -> bytes:
    return canonical_dumps(value)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: object, field: str) -> bytes:
    if not isinstance(value, str):
        raise ProofFormatError(f"{field} must be a base64 string")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProofFormatError(f"{field} is not base64: {exc}") from exc
    if _b64(data) != value:
        raise ProofFormatError(f"{field} is not in canonical base64")
    return data


def _hash(value: object, field: str) -> bytes:
    if not isinstance(value, str) or len(value) != 2 * HASH_SIZE or not set(value) <= _HEX:
        raise ProofFormatError(f"{field} must be 64 lower-case hex digits")
    return bytes.fromhex(value)


def _count(value: object, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 64:
        raise ProofFormatError(f"{field} must be an integer from 0 to 2**64 - 1")
    return value
