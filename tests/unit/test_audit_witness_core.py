"""The witness's decisions, the cosignature format and the witness file, without sockets: a
log made with the broker's own audit code (store, checkpointer, proofs) stands in for the
audit service. Real processes are in tests/integration/test_audit_witness.py."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from attestation.keys import SigningKey
from attestation.tree_heads import (
    TreeHead,
    TreeHeadError,
    cosign,
    open_checkpoint,
    open_cosignature,
)
from attestation.witness_log import WitnessLogError, append_record, read_witness_log
from broker.audit.checkpointer import AuditCheckpointer
from broker.audit.merkle import audit_leaf, consistency_proof, leaf_hash
from broker.audit.model import AuditEvent
from broker.audit.stored import iter_stored
from broker.store.memory import MemoryStore
from qtestbed.witness import Witness


class FakeLog:
    """A log kept by the broker's own store and checkpointer code."""

    def __init__(self, key: SigningKey) -> None:
        self.key = key
        self.store = MemoryStore()
        self.store.migrate()
        self.checkpointer = AuditCheckpointer(key)
        self.envelopes: list[bytes] = []
        self.cosignatures: list[tuple[int, bytes]] = []
        self.offered: list[int] = []

    def grow(self, count: int, actor: str = "alice") -> int:
        for i in range(count):
            self.store.append_audit(
                AuditEvent(kind="job.submitted", actor=actor, subject=f"j{i}", at=1e9 + i)
            )
        self.checkpointer.feed(iter_stored(self.store, after_seq=self.checkpointer.last_seq))
        checkpoint = self.checkpointer.make(2e9)
        self.envelopes.append(checkpoint.envelope)
        return checkpoint.tree_size

    def checkpoint_envelopes(self, min_tree_size: int) -> list[bytes]:
        return [e for e in self.envelopes if _size(e) >= min_tree_size]

    def consistency_proof(self, first_size: int, second_size: int) -> list[bytes]:
        hashes = [leaf_hash(audit_leaf(e)) for e in self.store.audit_entries(limit=second_size)]
        return consistency_proof(first_size, hashes)

    def add_cosignature(self, tree_size: int, envelope: bytes) -> None:
        self.cosignatures.append((tree_size, envelope))

    def offer_cosignature(self, tree_size: int, envelope: bytes) -> None:
        self.offered.append(tree_size)


def _size(envelope: bytes) -> int:
    payload = json.loads(base64.b64decode(json.loads(envelope)["payload"]))
    return int(payload["tree_size"])


@pytest.fixture
def broker_key() -> SigningKey:
    return SigningKey.generate()


def _witness(path: Path, broker_key: SigningKey, key: SigningKey | None = None) -> Witness:
    return Witness(
        path=path,
        key=key or SigningKey.generate(),
        log_key=broker_key.public_key,
        clock=lambda: 5e9,
    )


def test_cosigns_each_newer_head_after_checking_consistency(
    tmp_path: Path, broker_key: SigningKey
) -> None:
    log, key = FakeLog(broker_key), SigningKey.generate()
    witness = _witness(tmp_path / "w.jsonl", broker_key, key)
    first = log.grow(5)
    assert witness.poll(log).cosigned == open_checkpoint(log.envelopes[-1], broker_key.public_key)
    second = log.grow(6)
    outcome = witness.poll(log)
    assert outcome.alarms == ()
    assert [size for size, _ in log.cosignatures] == [first, second]
    head = open_cosignature(log.cosignatures[-1][1], key.public_key)
    assert (head.tree_size, head.log_key_id) == (second, broker_key.public_key.key_id)
    assert witness.poll(log).cosigned is None  # nothing new: nothing cosigned twice
    # The file remembers across a restart.
    again = _witness(tmp_path / "w.jsonl", broker_key, key)
    assert again.latest is not None
    assert again.latest.tree_size == second
    assert os.stat(tmp_path / "w.jsonl").st_mode & 0o777 == 0o600


def test_a_rewritten_log_fails_the_consistency_proof(
    tmp_path: Path, broker_key: SigningKey
) -> None:
    honest = FakeLog(broker_key)
    witness = _witness(tmp_path / "w.jsonl", broker_key)
    honest.grow(4)
    witness.poll(honest)
    # Another, longer history signed by the same key, still listing the cosigned head: only
    # the consistency proof can tell that it does not extend that head.
    forked = FakeLog(broker_key)
    forked.grow(9, actor="mallory")
    forked.envelopes.insert(0, honest.envelopes[0])
    outcome = witness.poll(forked)
    assert [a.kind for a in outcome.alarms] == ["inconsistent"]
    assert len(forked.cosignatures) == 0
    assert forked.offered == [4]  # the broker is told, by a cosignature it must refuse


def test_a_second_head_of_a_cosigned_size_is_a_fork_and_alarms_stick(
    tmp_path: Path, broker_key: SigningKey
) -> None:
    honest, forked = FakeLog(broker_key), FakeLog(broker_key)
    witness = _witness(tmp_path / "w.jsonl", broker_key)
    size = honest.grow(4)
    witness.poll(honest)
    assert forked.grow(4, actor="mallory") == size
    assert [a.kind for a in witness.poll(forked).alarms] == ["fork"]
    # One record per alarm, however often it is seen; none cosigned while alarmed.
    witness.poll(forked)
    honest.grow(3)
    assert witness.poll(honest).cosigned is None
    restarted = _witness(tmp_path / "w.jsonl", broker_key)
    assert [a.kind for a in restarted.alarms] == ["fork"]


def test_a_smaller_tree_is_a_rollback(tmp_path: Path, broker_key: SigningKey) -> None:
    log = FakeLog(broker_key)
    witness = _witness(tmp_path / "w.jsonl", broker_key)
    log.grow(3)
    log.grow(3)
    witness.poll(log)
    log.envelopes.pop()  # the newest checkpoint is gone (the store was put back)
    assert [a.kind for a in witness.poll(log).alarms] == ["rollback"]


def test_a_checkpoint_not_signed_by_the_broker_is_an_alarm(
    tmp_path: Path, broker_key: SigningKey
) -> None:
    log = FakeLog(SigningKey.generate())
    log.grow(2)
    assert [a.kind for a in _witness(tmp_path / "w.jsonl", broker_key).poll(log).alarms] == [
        "bad_checkpoint"
    ]


def test_cosignatures_refuse_another_key_and_another_payload(broker_key: SigningKey) -> None:
    witness_key = SigningKey.generate()
    head = TreeHead(tree_size=3, root_hash="ab" * 32, at=1.0)
    envelope = cosign(head, log_key_id="log", witnessed_at=2.0, key=witness_key)
    assert open_cosignature(envelope, witness_key.public_key).root_hash == "ab" * 32
    with pytest.raises(TreeHeadError, match="does not verify"):
        open_cosignature(envelope, SigningKey.generate().public_key)
    with pytest.raises(TreeHeadError, match="payload type"):
        open_checkpoint(envelope, witness_key.public_key)  # a cosignature is no checkpoint


def test_the_witness_file_refuses_others_and_skips_a_torn_line(
    tmp_path: Path, broker_key: SigningKey
) -> None:
    path = tmp_path / "w.jsonl"
    append_record(
        path, {"type": "alarm", "kind": "fork", "tree_size": 3, "message": "m", "at": 1.0}
    )
    with path.open("ab") as f:
        f.write(b'{"type": "checkpoint", "tree_')  # a crash mid-write
    copy = read_witness_log(path, broker_key.public_key)
    assert copy.torn_tail
    assert [a.kind for a in copy.alarms] == ["fork"]
    # The next record replaces the torn line rather than joining it.
    append_record(
        path, {"type": "alarm", "kind": "rollback", "tree_size": 2, "message": "m", "at": 2.0}
    )
    copy = read_witness_log(path, broker_key.public_key)
    assert not copy.torn_tail
    assert [a.kind for a in copy.alarms] == ["fork", "rollback"]
    os.chmod(path, 0o644)
    with pytest.raises(WitnessLogError, match="chmod 600"):
        append_record(path, {"type": "alarm"})
    path.write_bytes(b"not json\n")
    with pytest.raises(WitnessLogError, match="line 1"):
        read_witness_log(path, broker_key.public_key)
    path.write_text(
        json.dumps(
            {
                "type": "checkpoint",
                "tree_size": 1,
                "root_hash": "00" * 32,
                "envelope": "{}",
                "cosignature": "",
                "witnessed_at": 0,
            }
        )
        + "\n"
    )
    assert read_witness_log(path, broker_key.public_key).problems
