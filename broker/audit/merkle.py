"""RFC 6962 / RFC 9162 Merkle trees over the audit log: roots, inclusion and consistency proofs.

The tree is Certificate Transparency's: a leaf hashes as SHA-256(0x00 || leaf), an interior
node as SHA-256(0x01 || left || right), and a tree of n > 1 leaves splits at k, the largest
power of two smaller than n (so the left subtree is always perfect). The empty tree's root is
SHA-256 of the empty string. The prefixes keep a leaf from being passed off as a node.

Functions that build proofs take the tree's leaf *hashes* (`leaf_hash` of each leaf), so a
caller that already stores them never hashes twice. `MerkleBuilder` appends leaves with
O(log n) state (the roots of the perfect subtrees of the "compact range"), which is what an
append-only log that runs forever needs: it never re-reads old leaves to compute a new root.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

# The hashing and the proof checks live in `attestation.merkle_proofs`, which verifiers import
# without the broker; re-exported here so the broker has one place to take them from.
from attestation.merkle_proofs import (
    EMPTY_ROOT,
    HASH_SIZE,
    leaf_hash,
    node_hash,
    verify_consistency,
    verify_inclusion,
)
from broker.audit.chain import canonical_event_bytes
from broker.audit.model import AuditEntry

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MerkleBuilder",
    "audit_leaf",
    "consistency_proof",
    "inclusion_proof",
    "is_hash_hex",
    "leaf_hash",
    "merkle_root",
    "node_hash",
    "root_from_hashes",
    "split_point",
    "verify_consistency",
    "verify_inclusion",
]

_HEX_DIGITS = frozenset("0123456789abcdef")


def audit_leaf(entry: AuditEntry, *, canonical: bytes | None = None) -> bytes:
    """The leaf bytes of an audit entry: seq (8 bytes, big-endian) || prev_hash (32 raw bytes)
    || canonical event bytes.

    `entry_hash` is left out: it is a function of exactly these fields, so committing to them
    commits to it. Raises ValueError when seq or prev_hash cannot be encoded (a stored row an
    honest broker never writes). `canonical`: the event's canonical bytes, if already computed.
    """
    if not 0 <= entry.seq < 1 << 64:
        raise ValueError(f"seq {entry.seq} does not fit in 8 unsigned bytes")
    if not is_hash_hex(entry.prev_hash):
        raise ValueError(f"prev_hash of seq {entry.seq} is not 64 lower-case hex digits")
    prev = bytes.fromhex(entry.prev_hash)
    event = canonical_event_bytes(entry.event) if canonical is None else canonical
    return entry.seq.to_bytes(8, "big") + prev + event


def is_hash_hex(value: str) -> bool:
    """True iff `value` is a SHA-256 digest in its one stored spelling: 64 lower-case hex digits.

    `bytes.fromhex` also takes upper case and spaces; allowing them would give one hash two
    spellings, and an edited spelling would hash the same.
    """
    return len(value) == 2 * HASH_SIZE and set(value) <= _HEX_DIGITS


def split_point(n: int) -> int:
    """RFC 6962's k for n > 1 leaves: the largest power of two strictly smaller than n."""
    if n < 2:
        raise ValueError(f"a tree of {n} leaves has no split")
    return 1 << ((n - 1).bit_length() - 1)


def root_from_hashes(hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) given the n leaf hashes; the empty tree's root for n = 0."""
    if not hashes:
        return EMPTY_ROOT
    builder = MerkleBuilder()
    for value in hashes:
        builder.append_hash(value)
    return builder.root()


def merkle_root(leaves: Iterable[bytes]) -> bytes:
    """MTH over raw leaves (each is hashed with `leaf_hash` first)."""
    builder = MerkleBuilder()
    for leaf in leaves:
        builder.append(leaf)
    return builder.root()


def inclusion_proof(index: int, hashes: Sequence[bytes]) -> list[bytes]:
    """PATH(index, D[n]) of RFC 6962 §2.1.1 / RFC 9162 §2.1.3.1, leaf side first."""
    if not 0 <= index < len(hashes):
        raise ValueError(f"leaf index {index} is outside a tree of {len(hashes)} leaves")
    proof: list[bytes] = []
    lo, hi = 0, len(hashes)
    # Walk down from the root; each level adds the sibling subtree's root. Collected top-down,
    # returned bottom-up as the RFC orders it.
    while hi - lo > 1:
        k = split_point(hi - lo)
        if index < lo + k:
            proof.append(root_from_hashes(hashes[lo + k : hi]))
            hi = lo + k
        else:
            proof.append(root_from_hashes(hashes[lo : lo + k]))
            lo += k
    proof.reverse()
    return proof


def consistency_proof(old_size: int, hashes: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) of RFC 6962 §2.1.2 / RFC 9162 §2.1.4.1 for 0 <= m <= n = len(hashes).

    Empty when m is 0 or n: the empty tree and the tree itself need no proof.
    """
    n = len(hashes)
    if not 0 <= old_size <= n:
        raise ValueError(f"old size {old_size} is outside 0..{n}")
    if old_size in (0, n):
        return []
    return _subproof(old_size, hashes, complete=True)


def _subproof(m: int, hashes: Sequence[bytes], *, complete: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b) of RFC 6962 §2.1.2; `complete` is the RFC's flag b."""
    n = len(hashes)
    if m == n:
        return [] if complete else [root_from_hashes(hashes)]
    k = split_point(n)
    if m <= k:
        return [*_subproof(m, hashes[:k], complete=complete), root_from_hashes(hashes[k:])]
    return [*_subproof(m - k, hashes[k:], complete=False), root_from_hashes(hashes[:k])]


class MerkleBuilder:
    """An append-only Merkle tree that keeps only the O(log n) roots of its perfect subtrees.

    After n appends, `_peaks` holds one root per set bit of n, largest subtree first; the
    RFC 6962 root folds them right to left. Appending merges equal-sized subtrees like a binary
    counter, so each append costs O(1) hashes amortised and `root()` O(log n).
    """

    __slots__ = ("_peaks", "_size")

    def __init__(self) -> None:
        self._size = 0
        self._peaks: list[bytes] = []

    @classmethod
    def from_state(cls, size: int, peaks: Sequence[bytes]) -> MerkleBuilder:
        """Resume from `state()`: the tree size and its perfect-subtree roots, largest first."""
        if size < 0 or len(peaks) != size.bit_count():
            raise ValueError(f"a tree of {size} leaves has {size.bit_count()} subtree roots")
        if any(len(p) != HASH_SIZE for p in peaks):
            raise ValueError(f"subtree roots must be {HASH_SIZE} bytes")
        builder = cls()
        builder._size = size
        builder._peaks = list(peaks)
        return builder

    def state(self) -> tuple[int, tuple[bytes, ...]]:
        """(size, perfect-subtree roots largest first): enough to resume with `from_state`."""
        return self._size, tuple(self._peaks)

    def copy(self) -> MerkleBuilder:
        return MerkleBuilder.from_state(self._size, self._peaks)

    @property
    def size(self) -> int:
        return self._size

    def append(self, leaf: bytes) -> None:
        """Append a raw leaf (hashed here with `leaf_hash`)."""
        self.append_hash(leaf_hash(leaf))

    def append_hash(self, value: bytes) -> None:
        """Append a leaf given its leaf hash."""
        if len(value) != HASH_SIZE:
            raise ValueError(f"a leaf hash is {HASH_SIZE} bytes, not {len(value)}")
        size = self._size
        # Each trailing 1 bit of the old size is a subtree of the new leaf's height: merge it.
        while size & 1:
            value = node_hash(self._peaks.pop(), value)
            size >>= 1
        self._peaks.append(value)
        self._size += 1

    def root(self) -> bytes:
        """MTH of everything appended so far."""
        if not self._peaks:
            return EMPTY_ROOT
        value = self._peaks[-1]
        for peak in reversed(self._peaks[:-1]):
            value = node_hash(peak, value)
        return value
