"""The offline inclusion-proof check (attestation/audit_inclusion.py) against proofs the broker's
own tree code makes: every leaf of many tree sizes verifies, and any changed byte of the entry
or of the proof (path, checkpoint, index, size, and the proof's JSON form in a bundle) fails."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from attestation.audit_inclusion import (
    ExpectedCompletion,
    InclusionProof,
    ProofFormatError,
    decode_entry,
    root_from_path,
    verify_inclusion_proof,
)
from attestation.keys import KeyKind, SigningKey
from broker.audit.chain import GENESIS_HASH, chain_hash
from broker.audit.checkpoints import CHECKPOINT_PAYLOAD_TYPE, sign_checkpoint
from broker.audit.merkle import audit_leaf, inclusion_proof, leaf_hash, root_from_hashes
from broker.audit.model import AuditEntry, AuditEvent
from broker.jobs.model import JobResult
from broker.jobs.result_digests import completed_detail

KEY = SigningKey.generate(KeyKind.ECDSA_P256)
COUNTS = {"000": 130, "111": 126}
JOB = "0f" * 16


def _entries(size: int, completed_at: int) -> list[AuditEntry]:
    """A chained log of `size` entries; seq `completed_at` is JOB's job.completed."""
    result = JobResult(
        job_id=JOB,
        device_id="sim-open",
        counts=COUNTS,
        execution_seconds=0.5,
        receipt=b'{"receipt":1}',
        stored_at=1.0,
    )
    entries, prev = [], GENESIS_HASH
    for seq in range(1, size + 1):
        if seq == completed_at:
            event = AuditEvent(
                kind="job.completed",
                actor="broker",
                subject=JOB,
                at=1_733_300_000.25 + seq,
                detail=completed_detail(result, 256),
            )
        else:
            event = AuditEvent(kind="job.running", actor="broker", subject=f"j{seq}", at=seq)
        entry_hash = chain_hash(prev, seq, event)
        entries.append(AuditEntry(seq=seq, event=event, prev_hash=prev, entry_hash=entry_hash))
        prev = entry_hash
    return entries


def _proof(size: int, seq: int, key: SigningKey = KEY) -> InclusionProof:
    """The proof the broker would serve (broker/audit/proofs.py does exactly these steps)."""
    entries = _entries(size, seq)
    hashes = [leaf_hash(audit_leaf(e)) for e in entries]
    checkpoint = sign_checkpoint(size, root_from_hashes(hashes).hex(), 1_733_300_100.5, key)
    return InclusionProof(
        entry=audit_leaf(entries[seq - 1]),
        leaf_index=seq - 1,
        tree_size=size,
        audit_path=tuple(inclusion_proof(seq - 1, hashes)),
        checkpoint=checkpoint.envelope,
    )


EXPECTED = ExpectedCompletion(job_id=JOB, device_id="sim-open", shots=256, counts=COUNTS)


def _check(proof: InclusionProof) -> list[str]:
    return verify_inclusion_proof(proof, KEY.public_key, EXPECTED)


def test_payload_type_is_the_brokers() -> None:
    from attestation import audit_inclusion

    assert audit_inclusion.CHECKPOINT_PAYLOAD_TYPE == CHECKPOINT_PAYLOAD_TYPE


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31, 100])
def test_every_leaf_of_every_size_verifies(size: int) -> None:
    for seq in range(1, size + 1):
        assert _check(_proof(size, seq)) == [], (size, seq)


def test_root_from_path_agrees_with_the_brokers_tree() -> None:
    hashes = [leaf_hash(bytes([i])) for i in range(37)]
    root = root_from_hashes(hashes)
    for index in range(37):
        path = inclusion_proof(index, hashes)
        assert root_from_path(index, 37, hashes[index], path) == root
        assert root_from_path(index, 37, hashes[index], path[:-1]) is None  # a path too short


def _flips(data: bytes) -> Iterator[bytes]:
    """`data` with each byte changed, in two ways: the lowest bit, and every bit."""
    for i in range(len(data)):
        for mask in (0x01, 0xFF):
            yield data[:i] + bytes([data[i] ^ mask]) + data[i + 1 :]


def _fails(proof: InclusionProof, expected: ExpectedCompletion = EXPECTED) -> bool:
    return bool(verify_inclusion_proof(proof, KEY.public_key, expected))


def test_any_changed_byte_of_the_entry_fails() -> None:
    proof = _proof(23, 11)
    assert _check(proof) == []
    flipped = [p for p in _flips(proof.entry) if not _fails(_replace(proof, entry=p))]
    assert flipped == []


def test_any_changed_byte_of_the_audit_path_fails() -> None:
    proof = _proof(23, 11)
    assert len(proof.audit_path) == 5
    for n, node in enumerate(proof.audit_path):
        for changed in _flips(node):
            path = (*proof.audit_path[:n], changed, *proof.audit_path[n + 1 :])
            assert _fails(_replace(proof, audit_path=path)), (n, changed.hex())
    for n in range(len(proof.audit_path)):  # a node dropped, or one too many
        assert _fails(_replace(proof, audit_path=proof.audit_path[:n] + proof.audit_path[n + 1 :]))
    assert _fails(_replace(proof, audit_path=(*proof.audit_path, proof.audit_path[0])))


def test_any_changed_byte_of_the_checkpoint_fails() -> None:
    proof = _proof(23, 11)
    for changed in _flips(proof.checkpoint):
        assert _fails(_replace(proof, checkpoint=changed)), changed


def test_index_and_size_must_be_exact() -> None:
    proof = _proof(23, 11)
    for index in (0, 9, 11, 12, 22):
        assert _fails(_replace(proof, leaf_index=index))
    for size in (11, 22, 24, 32):
        assert _fails(_replace(proof, tree_size=size))


def test_any_changed_byte_of_the_proof_as_saved_in_a_bundle_fails() -> None:
    proof = _proof(23, 11)
    text = json.dumps(proof.to_dict(), separators=(",", ":")).encode()
    assert InclusionProof.from_dict(json.loads(text)) == proof
    for changed in _flips(text):
        try:
            parsed = InclusionProof.from_dict(json.loads(changed))
        except (ValueError, UnicodeDecodeError):  # ProofFormatError and JSON errors
            continue
        assert _fails(parsed), changed


def test_a_checkpoint_by_another_key_fails() -> None:
    other = SigningKey.generate(KeyKind.ECDSA_P256)
    problems = _check(_proof(9, 4, key=other))
    assert any("not signed" in p for p in problems)


def test_the_entry_must_vouch_for_this_job_device_shots_and_counts() -> None:
    proof = _proof(9, 4)
    for expected, phrase in (
        (
            ExpectedCompletion(job_id="other", device_id="sim-open", shots=256, counts=COUNTS),
            "not job.completed of this job",
        ),
        (
            ExpectedCompletion(job_id=JOB, device_id="sim-x", shots=256, counts=COUNTS),
            "records device",
        ),
        (ExpectedCompletion(job_id=JOB, device_id="sim-open", shots=255, counts=COUNTS), "shots"),
        (
            ExpectedCompletion(
                job_id=JOB, device_id="sim-open", shots=256, counts={**COUNTS, "000": 131}
            ),
            "other counts",
        ),
    ):
        problems = verify_inclusion_proof(proof, KEY.public_key, expected)
        assert any(phrase in p for p in problems), (phrase, problems)


def test_another_entry_of_the_same_log_does_not_pass_as_the_job_completing() -> None:
    entries = _entries(9, 4)
    hashes = [leaf_hash(audit_leaf(e)) for e in entries]
    checkpoint = sign_checkpoint(9, root_from_hashes(hashes).hex(), 5.0, KEY)
    proof = InclusionProof(
        entry=audit_leaf(entries[5]),
        leaf_index=5,
        tree_size=9,
        audit_path=tuple(inclusion_proof(5, hashes)),
        checkpoint=checkpoint.envelope,
    )
    assert any("not job.completed of this job" in p for p in _check(proof))


def test_entries_decode_only_in_canonical_form() -> None:
    entry = _proof(3, 2).entry
    assert decode_entry(entry).kind == "job.completed"
    with pytest.raises(ProofFormatError):
        decode_entry(entry[:40] + entry[40:].replace(b":", b": ", 1))


def _replace(proof: InclusionProof, **changes: object) -> InclusionProof:
    import dataclasses

    return dataclasses.replace(proof, **changes)  # type: ignore[arg-type]
