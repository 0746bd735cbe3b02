"""RFC 6962 Merkle trees: published test vectors, and agreement with the RFC's own recursion.

The vectors are Certificate Transparency's (transparency-dev/merkle testonly/constants.go and
proof/verify_test.go): leaves, every node hash of the 8-leaf tree, roots for sizes 0 to 8, and
inclusion and consistency proofs.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

import pytest

from broker.audit.chain import GENESIS_HASH, canonical_event_bytes
from broker.audit.merkle import (
    EMPTY_ROOT,
    MerkleBuilder,
    audit_leaf,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    merkle_root,
    node_hash,
    root_from_hashes,
    split_point,
    verify_consistency,
    verify_inclusion,
)
from broker.audit.model import AuditEntry, AuditEvent

LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# NODES[level][index]: the hash of each complete subtree of the 8-leaf tree.
NODES = [
    [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
        "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
    ],
    [
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    ],
    [
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    ["5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"],
]
# (leaf index, tree size, proof); the published vectors number leaves from 1, these from 0.
INCLUSION = [
    (0, 1, []),
    (0, 8, [NODES[0][1], NODES[1][1], NODES[2][1]]),
    (5, 8, [NODES[0][4], NODES[1][3], NODES[2][0]]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, [NODES[0][0], NODES[1][1], NODES[0][4]]),
]
CONSISTENCY = [
    (1, 1, []),
    (1, 8, [NODES[0][1], NODES[1][1], NODES[2][1]]),
    (6, 8, [NODES[1][2], NODES[1][3], NODES[2][0]]),
    (2, 5, [NODES[1][1], NODES[0][4]]),
    (6, 7, [NODES[1][2], NODES[0][6], NODES[2][0]]),
]

HASHES = [leaf_hash(leaf) for leaf in LEAVES]


def hx(values: Sequence[str]) -> list[bytes]:
    return [bytes.fromhex(v) for v in values]


# ---- the RFC's definitions, written as literally as possible -----------------------------


def naive_k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def naive_mth(leaves: Sequence[bytes]) -> bytes:
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = naive_k(n)
    return hashlib.sha256(b"\x01" + naive_mth(leaves[:k]) + naive_mth(leaves[k:])).digest()


def naive_path(m: int, leaves: Sequence[bytes]) -> list[bytes]:
    n = len(leaves)
    if n == 1:
        return []
    k = naive_k(n)
    if m < k:
        return [*naive_path(m, leaves[:k]), naive_mth(leaves[k:])]
    return [*naive_path(m - k, leaves[k:]), naive_mth(leaves[:k])]


def naive_subproof(m: int, leaves: Sequence[bytes], b: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if b else [naive_mth(leaves)]
    k = naive_k(n)
    if m <= k:
        return [*naive_subproof(m, leaves[:k], b), naive_mth(leaves[k:])]
    return [*naive_subproof(m - k, leaves[k:], False), naive_mth(leaves[:k])]


def random_leaves(rng: random.Random, n: int) -> list[bytes]:
    return [rng.randbytes(rng.randrange(0, 40)) for _ in range(n)]


# ---- known answers -------------------------------------------------------------------------


def test_roots_match_the_published_vectors_for_every_size() -> None:
    for size, expected in enumerate(ROOTS):
        assert merkle_root(LEAVES[:size]).hex() == expected
        assert root_from_hashes(HASHES[:size]).hex() == expected
    assert EMPTY_ROOT.hex() == ROOTS[0]


def test_every_complete_subtree_matches_the_published_node_hashes() -> None:
    for level, row in enumerate(NODES):
        width = 1 << level
        for index, expected in enumerate(row):
            subtree = HASHES[index * width : (index + 1) * width]
            assert root_from_hashes(subtree).hex() == expected


def test_the_prefixes_separate_leaves_from_nodes() -> None:
    assert leaf_hash(b"").hex() == ROOTS[1]
    assert node_hash(HASHES[0], HASHES[1]).hex() == ROOTS[2]
    assert leaf_hash(HASHES[0] + HASHES[1]) != node_hash(HASHES[0], HASHES[1])


@pytest.mark.parametrize(
    ("n", "k"), [(2, 1), (3, 2), (4, 2), (5, 4), (8, 4), (9, 8), (1000, 512), (2**40 + 1, 2**40)]
)
def test_split_is_the_largest_power_of_two_below_n(n: int, k: int) -> None:
    assert split_point(n) == k


def test_split_of_fewer_than_two_leaves_is_refused() -> None:
    with pytest.raises(ValueError, match="no split"):
        split_point(1)


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION)
def test_inclusion_proofs_match_the_published_vectors(
    index: int, size: int, proof: list[str]
) -> None:
    assert inclusion_proof(index, HASHES[:size]) == hx(proof)
    assert verify_inclusion(index, size, HASHES[index], hx(proof), bytes.fromhex(ROOTS[size]))


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY)
def test_consistency_proofs_match_the_published_vectors(
    old: int, new: int, proof: list[str]
) -> None:
    assert consistency_proof(old, HASHES[:new]) == hx(proof)
    old_root, new_root = bytes.fromhex(ROOTS[old]), bytes.fromhex(ROOTS[new])
    assert verify_consistency(old, new, old_root, new_root, hx(proof))


def test_consistency_edge_cases() -> None:
    some, other = bytes.fromhex(ROOTS[3]), bytes.fromhex(ROOTS[4])
    assert verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    assert verify_consistency(0, 5, EMPTY_ROOT, other, [])
    assert not verify_consistency(0, 5, some, other, [])  # size 0 must carry the empty root
    assert not verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT])
    assert verify_consistency(3, 3, some, some, [])
    assert not verify_consistency(3, 3, some, other, [])
    assert not verify_consistency(3, 3, some, some, [some])
    assert not verify_consistency(2, 1, some, other, [])  # the past cannot be larger
    assert not verify_consistency(1, 2, some, other, [])  # a real step needs a proof
    assert consistency_proof(0, HASHES) == [] == consistency_proof(8, HASHES)
    with pytest.raises(ValueError, match="outside"):
        consistency_proof(9, HASHES)


def test_inclusion_edge_cases() -> None:
    root = bytes.fromhex(ROOTS[1])
    assert verify_inclusion(0, 1, HASHES[0], [], root)
    assert not verify_inclusion(0, 0, HASHES[0], [], EMPTY_ROOT)
    assert not verify_inclusion(1, 1, HASHES[0], [], root)
    assert not verify_inclusion(-1, 1, HASHES[0], [], root)
    with pytest.raises(ValueError, match="outside"):
        inclusion_proof(8, HASHES)


# ---- against the RFC's recursion, on random trees ------------------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_roots_and_proofs_agree_with_the_rfc_recursion(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randrange(0, 70) if seed % 2 else rng.randrange(100, 300)
    leaves = random_leaves(rng, n)
    hashes = [leaf_hash(leaf) for leaf in leaves]
    root = naive_mth(leaves)
    assert merkle_root(leaves) == root
    for _ in range(10 if n else 0):
        m = rng.randrange(n)
        proof = inclusion_proof(m, hashes)
        assert proof == naive_path(m, leaves)
        assert verify_inclusion(m, n, hashes[m], proof, root)
    for _ in range(10):
        m = rng.randrange(0, n + 1)
        proof = consistency_proof(m, hashes)
        assert proof == ([] if m in (0, n) else naive_subproof(m, leaves, True))
        assert verify_consistency(m, n, naive_mth(leaves[:m]), root, proof)


def test_every_inclusion_proof_verifies_and_no_corruption_does() -> None:
    rng = random.Random(6962)
    hashes = [leaf_hash(leaf) for leaf in random_leaves(rng, 33)]
    bogus = hashlib.sha256(b"bogus").digest()
    for n in range(1, len(hashes) + 1):
        tree = hashes[:n]
        root = root_from_hashes(tree)
        for m in range(n):
            proof = inclusion_proof(m, tree)
            assert verify_inclusion(m, n, tree[m], proof, root)
            wrong: list[tuple[int, int, bytes, list[bytes], bytes]] = [
                (m, n, tree[m], proof, bogus),
                (m, n, bogus, proof, root),
                (m, n, tree[m], [*proof, root], root),
                (m, n, tree[m], [bogus, *proof], root),
                (m, n * 2, tree[m], proof, root),
            ]
            if n > 1:
                wrong.append((m ^ 1 if m ^ 1 < n else m - 1, n, tree[m], proof, root))
                wrong.append((m, n, tree[m], proof[:-1], root))
                flipped = [bytes([p[0] ^ 8]) + p[1:] for p in proof[:1]] + proof[1:]
                wrong.append((m, n, tree[m], flipped, root))
            for args in wrong:
                assert not verify_inclusion(*args), (m, n, args[:2])


def test_every_consistency_proof_verifies_and_no_corruption_does() -> None:
    rng = random.Random(9162)
    hashes = [leaf_hash(leaf) for leaf in random_leaves(rng, 33)]
    roots = [root_from_hashes(hashes[:n]) for n in range(len(hashes) + 1)]
    for n in range(1, len(hashes) + 1):
        for m in range(1, n):
            proof = consistency_proof(m, hashes[:n])
            assert verify_consistency(m, n, roots[m], roots[n], proof)
            wrong: list[tuple[int, int, bytes, bytes, list[bytes]]] = [
                (m, n, roots[n], roots[m], proof),
                (m, n, roots[m - 1], roots[n], proof),
                (m, n, roots[m], roots[n - 1], proof),
                (m, n, roots[m], roots[n], []),
                (m, n, roots[m], roots[n], proof[:-1]),
                (m, n, roots[m], roots[n], [*proof, roots[m]]),
                (m, n, roots[m], roots[n], [roots[n], *proof]),
                (
                    m,
                    n,
                    roots[m],
                    roots[n],
                    [*proof[:-1], bytes([proof[-1][0] ^ 16]) + proof[-1][1:]],
                ),
            ]
            if m + 1 < n:
                wrong.append((m + 1, n, roots[m], roots[n], proof))
            for args in wrong:
                assert not verify_consistency(*args), (m, n)


# ---- the incremental builder ---------------------------------------------------------------


def test_builder_root_equals_the_recursion_after_every_append() -> None:
    rng = random.Random(42)
    leaves = random_leaves(rng, 130)
    builder = MerkleBuilder()
    assert builder.root() == EMPTY_ROOT
    for n, leaf in enumerate(leaves, start=1):
        builder.append(leaf)
        assert builder.size == n
        assert builder.root() == naive_mth(leaves[:n])
        assert len(builder.state()[1]) == n.bit_count()  # O(log n) state


def test_builder_resumes_from_its_state() -> None:
    rng = random.Random(7)
    leaves = random_leaves(rng, 50)
    builder = MerkleBuilder()
    for leaf in leaves[:37]:
        builder.append(leaf)
    resumed = MerkleBuilder.from_state(*builder.state())
    copy = builder.copy()
    for leaf in leaves[37:]:
        resumed.append(leaf)
        builder.append(leaf)
    assert resumed.root() == builder.root() == naive_mth(leaves)
    assert copy.size == 37
    assert copy.root() == naive_mth(leaves[:37])


def test_builder_refuses_malformed_state_and_hashes() -> None:
    with pytest.raises(ValueError, match="subtree roots"):
        MerkleBuilder.from_state(3, [EMPTY_ROOT])
    with pytest.raises(ValueError, match="32 bytes"):
        MerkleBuilder.from_state(1, [b"short"])
    with pytest.raises(ValueError, match="32 bytes"):
        MerkleBuilder().append_hash(b"short")


# ---- audit leaves --------------------------------------------------------------------------


def test_audit_leaf_is_seq_prev_hash_and_canonical_event() -> None:
    event = AuditEvent(kind="job.submitted", actor="alice", subject="j1", at=5, detail={"b": 1})
    entry = AuditEntry(seq=258, event=event, prev_hash=GENESIS_HASH, entry_hash="ab" * 32)
    leaf = audit_leaf(entry)
    assert leaf[:8] == b"\x00\x00\x00\x00\x00\x00\x01\x02"
    assert leaf[8:40] == bytes(32)
    assert leaf[40:] == canonical_event_bytes(event)
    assert b'"at":5.0' in leaf  # the stored float form, whatever the caller passed


def test_audit_leaf_refuses_what_cannot_be_encoded() -> None:
    event = AuditEvent(kind="k", actor="a", subject="s", at=1.0)
    for prev in ("ab", "zz" * 32, "AB" * 32, " " + "ab" * 31 + "a"):
        with pytest.raises(ValueError, match="prev_hash"):
            audit_leaf(AuditEntry(seq=1, event=event, prev_hash=prev, entry_hash=""))
    with pytest.raises(ValueError, match="8 unsigned bytes"):
        audit_leaf(AuditEntry(seq=-1, event=event, prev_hash=GENESIS_HASH, entry_hash=""))
