"""LeafTree (the broker's in-memory tree for inclusion proofs) gives exactly the roots and
paths of the reference RFC 6962 code in broker/audit/merkle.py, across the sizes where its
stored subtree levels begin, fill and carry."""

from __future__ import annotations

import pytest

from broker.audit.leaf_tree import LeafTree
from broker.audit.merkle import EMPTY_ROOT, inclusion_proof, leaf_hash, root_from_hashes

HASHES = [leaf_hash(i.to_bytes(4, "big")) for i in range(1100)]


def _tree(size: int, low: int) -> LeafTree:
    tree = LeafTree(low=low)
    for value in HASHES[:size]:
        tree.append_hash(value)
    return tree


@pytest.mark.parametrize("low", [1, 2, 3])
def test_every_root_and_path_of_small_trees_matches_the_reference(low: int) -> None:
    tree = _tree(70, low)
    assert tree.root(0) == EMPTY_ROOT
    for size in range(1, 71):
        assert tree.root(size) == root_from_hashes(HASHES[:size]), size
        for index in range(size):
            assert tree.path(index, size) == inclusion_proof(index, HASHES[:size])


def test_large_trees_with_the_default_levels_match_the_reference() -> None:
    tree = _tree(1100, 8)
    for size in (255, 256, 257, 511, 512, 513, 768, 1024, 1025, 1100):
        assert tree.root(size) == root_from_hashes(HASHES[:size]), size
        for index in (0, 1, 255, 256, size // 2, size - 2, size - 1):
            if 0 <= index < size:
                assert tree.path(index, size) == inclusion_proof(index, HASHES[:size])


def test_out_of_range_requests_are_refused() -> None:
    tree = _tree(5, 1)
    with pytest.raises(ValueError, match="outside"):
        tree.path(5, 5)
    with pytest.raises(ValueError, match="not within"):
        tree.root(6)
    with pytest.raises(IndexError):
        tree.leaf(5)
