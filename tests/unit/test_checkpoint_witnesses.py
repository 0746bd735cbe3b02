"""The offline witness check of a result bundle's checkpoint (attestation/checkpoint_witnesses.py):
a pinned witness's cosignature over exactly the checkpoint's log, size and root counts; one over
another root, size or log is a problem; one by a key not pinned does not count; any changed
byte of a cosignature leaves the checkpoint not witnessed. And how proofs carry cosignatures in
a bundle (older bundles, without them, still load)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator

import pytest

from attestation.audit_inclusion import InclusionProof, ProofFormatError
from attestation.checkpoint_witnesses import WitnessCheck, check_cosignatures
from attestation.keys import KeyKind, SigningKey, VerifyKey
from attestation.tree_heads import TreeHead, cosign
from broker.audit.checkpoints import sign_checkpoint

LOG = SigningKey.generate(KeyKind.ECDSA_P256)
WITNESS = SigningKey.generate(KeyKind.ED25519)
OTHER_WITNESS = SigningKey.generate(KeyKind.ED25519)
ROOT = "ab" * 32
SIZE = 41
CHECKPOINT = sign_checkpoint(SIZE, ROOT, 1_733_300_100.5, LOG).envelope


def _cosign(
    key: SigningKey = WITNESS,
    *,
    size: int = SIZE,
    root: str = ROOT,
    log_key_id: str = LOG.public_key.key_id,
) -> bytes:
    head = TreeHead(tree_size=size, root_hash=root, at=1_733_300_100.5)
    return cosign(head, log_key_id=log_key_id, witnessed_at=1_733_300_101.0, key=key)


def _check(cosignatures: list[bytes], pinned: list[VerifyKey] | None = None) -> WitnessCheck:
    keys = pinned if pinned is not None else [WITNESS.public_key]
    return check_cosignatures(CHECKPOINT, LOG.public_key, cosignatures, keys)


def test_a_pinned_witness_cosigning_exactly_the_checkpoint_counts() -> None:
    check = _check([_cosign()])
    assert check.problems == ()
    assert check.witnesses == {WITNESS.public_key.key_id}
    # Two pinned witnesses count as two; the same witness twice counts once.
    both = _check(
        [_cosign(), _cosign(), _cosign(OTHER_WITNESS)],
        [WITNESS.public_key, OTHER_WITNESS.public_key],
    )
    assert len(both.witnesses) == 2
    assert both.problems == ()


@pytest.mark.parametrize(
    ("cosignature", "phrase"),
    [
        (_cosign(root="cd" * 32), "not the checkpoint's tree size 41 with root"),
        (_cosign(size=SIZE + 1), "cosigns tree size 42"),
        (_cosign(log_key_id=OTHER_WITNESS.public_key.key_id), "not this log"),
    ],
    ids=["another-root", "another-size", "another-log"],
)
def test_a_cosignature_over_another_head_or_log_fails(cosignature: bytes, phrase: str) -> None:
    check = _check([cosignature])
    assert check.witnesses == frozenset()
    assert len(check.problems) == 1, check.problems
    assert phrase in check.problems[0], check.problems


def test_a_cosignature_by_a_key_not_pinned_does_not_count() -> None:
    check = _check([_cosign(OTHER_WITNESS)])
    assert check.witnesses == frozenset()
    assert check.problems == ()
    assert check.unpinned == 1


def test_a_checkpoint_not_signed_by_the_log_key_cannot_be_witnessed() -> None:
    check = check_cosignatures(CHECKPOINT, WITNESS.public_key, [_cosign()], [WITNESS.public_key])
    assert check.witnesses == frozenset()
    assert "cosignatures cannot be checked" in check.problems[0]


def _flips(data: bytes) -> Iterator[bytes]:
    for i in range(len(data)):
        for bit in (0x01, 0x20):
            yield data[:i] + bytes([data[i] ^ bit]) + data[i + 1 :]


def test_any_changed_byte_of_a_cosignature_leaves_the_checkpoint_unwitnessed() -> None:
    original = _cosign()
    for changed in _flips(original):
        check = _check([changed])
        assert check.witnesses == frozenset(), changed


def _proof(cosignatures: tuple[bytes, ...]) -> InclusionProof:
    return InclusionProof(
        entry=b"e" * 60,
        leaf_index=3,
        tree_size=SIZE,
        audit_path=(b"\x01" * 32,),
        checkpoint=CHECKPOINT,
        cosignatures=cosignatures,
    )


def test_a_bundle_keeps_the_cosignatures_and_says_whether_it_is_witnessed() -> None:
    witnessed = _proof((_cosign(),))
    saved = witnessed.to_dict()
    assert saved["witnessed"] is True
    assert InclusionProof.from_dict(json.loads(json.dumps(saved))) == witnessed
    unwitnessed = _proof(())
    assert unwitnessed.to_dict()["witnessed"] is False
    # A bundle saved before witnessed proofs carries neither field: it loads, unwitnessed.
    old = {k: v for k, v in unwitnessed.to_dict().items() if k not in ("cosignatures", "witnessed")}
    assert InclusionProof.from_dict(old) == dataclasses.replace(unwitnessed)
    # The note must match what is carried; an unknown field is refused, not ignored.
    with pytest.raises(ProofFormatError, match="witnessed must say"):
        InclusionProof.from_dict({**saved, "cosignatures": []})
    with pytest.raises(ProofFormatError, match="unknown fields"):
        InclusionProof.from_dict({**saved, "cosignature": []})
