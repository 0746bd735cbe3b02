"""An in-memory RFC 6962 tree over the audit log's leaf hashes, for inclusion proofs in
O(log² n) hashing instead of O(n).

It keeps every leaf hash (32 bytes an entry) and the roots of the perfect, aligned subtrees of
`2**low` leaves and more (1/2**(low-1) of a hash an entry, so about 1% more memory at the
default `low` of 8). Those roots never change once their leaves exist, because the log only
grows. Any subtree RFC 6962 asks for is then a few stored roots plus, at the ragged right edge,
at most `2**low` leaf hashes hashed afresh. `broker/audit/merkle.py` stays the reference: the
unit tests check that both give the same roots and paths.
"""

from __future__ import annotations

from broker.audit.merkle import HASH_SIZE, node_hash, root_from_hashes, split_point


class LeafTree:
    __slots__ = ("_leaves", "_levels", "_low")

    def __init__(self, *, low: int = 8) -> None:
        if low < 1:
            raise ValueError("low must be at least 1")
        self._low = low
        self._leaves = bytearray()
        # _levels[i]: roots of the aligned subtrees of 2**(low + i) leaves, left to right.
        self._levels: list[bytearray] = []

    @property
    def size(self) -> int:
        return len(self._leaves) // HASH_SIZE

    def leaf(self, index: int) -> bytes:
        if not 0 <= index < self.size:
            raise IndexError(f"leaf {index} of a tree of {self.size}")
        return bytes(self._leaves[index * HASH_SIZE : (index + 1) * HASH_SIZE])

    def append_hash(self, value: bytes) -> None:
        if len(value) != HASH_SIZE:
            raise ValueError(f"a leaf hash is {HASH_SIZE} bytes, not {len(value)}")
        self._leaves += value
        size, chunk = self.size, 1 << self._low
        if size % chunk:
            return
        node = root_from_hashes(self._leaf_hashes(size - chunk, size))
        level = 0
        while True:
            if level == len(self._levels):
                self._levels.append(bytearray())
            row = self._levels[level]
            row += node
            count = len(row) // HASH_SIZE
            if count % 2:
                return
            node = node_hash(_at(row, count - 2), _at(row, count - 1))
            level += 1

    def root(self, size: int) -> bytes:
        """MTH of the first `size` leaves."""
        if not 0 <= size <= self.size:
            raise ValueError(f"a tree of {size} leaves is not within {self.size}")
        return self._range_root(0, size)

    def path(self, index: int, size: int) -> list[bytes]:
        """PATH(index, D[size]) of RFC 6962 §2.1.1, leaf side first, as `inclusion_proof`."""
        if not 0 <= index < size <= self.size:
            raise ValueError(f"leaf index {index} is outside a tree of {size} leaves")
        proof: list[bytes] = []
        lo, hi = 0, size
        while hi - lo > 1:
            k = split_point(hi - lo)
            if index < lo + k:
                proof.append(self._range_root(lo + k, hi))
                hi = lo + k
            else:
                proof.append(self._range_root(lo, lo + k))
                lo += k
        proof.reverse()
        return proof

    def _range_root(self, lo: int, hi: int) -> bytes:
        """MTH of leaves [lo, hi) where `lo` is aligned as RFC 6962's splits leave it."""
        n = hi - lo
        if n & (n - 1) == 0:
            return self._perfect_root(lo, n)
        k = split_point(n)
        return node_hash(self._perfect_root(lo, k), self._range_root(lo + k, hi))

    def _perfect_root(self, lo: int, n: int) -> bytes:
        level = n.bit_length() - 1 - self._low
        if level < 0 or lo % n:
            return root_from_hashes(self._leaf_hashes(lo, lo + n))
        return _at(self._levels[level], lo // n)

    def _leaf_hashes(self, lo: int, hi: int) -> list[bytes]:
        return [self.leaf(i) for i in range(lo, hi)]


def _at(row: bytearray, index: int) -> bytes:
    return bytes(row[index * HASH_SIZE : (index + 1) * HASH_SIZE])
