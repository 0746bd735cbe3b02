"""`verify_audit` over a memory store: the checks beyond the chain (zero and stale checkpoints,
a witness's copy) and how a further check plugs in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from attestation.keys import SigningKey
from attestation.tree_heads import cosign, open_checkpoint
from attestation.witness_log import (
    alarm_record,
    append_record,
    checkpoint_record,
    read_witness_log,
)
from broker.audit.checkpointer import AuditCheckpointer
from broker.audit.model import AuditEvent, Checkpoint
from broker.audit.stored import iter_stored
from broker.audit.verification import (
    CHECKS,
    AuditVerdict,
    Finding,
    NamedCheck,
    VerifyContext,
    verify_audit,
)
from broker.store.memory import MemoryStore

EVERY = 60.0


class Log:
    def __init__(self) -> None:
        self.key = SigningKey.generate()
        self.store = MemoryStore()
        self.store.migrate()
        self.checkpointer = AuditCheckpointer(self.key)

    def add(self, count: int, *, at: float) -> None:
        for i in range(count):
            self.store.append_audit(
                AuditEvent(kind="attestation.passed", actor="a", subject=f"d{i}", at=at + i)
            )
        self.checkpointer.feed(iter_stored(self.store, after_seq=self.checkpointer.last_seq))

    def sign(self, at: float) -> Checkpoint:
        checkpoint = self.checkpointer.make(at)
        self.store.add_checkpoint(checkpoint)
        return checkpoint

    def verify(
        self, witness: Path | None = None, checks: list[NamedCheck] | None = None
    ) -> AuditVerdict:
        copy = read_witness_log(witness, self.key.public_key) if witness else None
        return verify_audit(
            self.store,
            self.key.public_key,
            stored_checkpoints=self.store.checkpoints(),
            checkpoint_every_seconds=EVERY,
            witness=copy,
            checks=checks,
        )


def _witness(path: Path, log: Log, checkpoint: Checkpoint) -> None:
    head = open_checkpoint(checkpoint.envelope, log.key.public_key)
    cosig = cosign(
        head, log_key_id=log.key.public_key.key_id, witnessed_at=1.0, key=SigningKey.generate()
    )
    append_record(path, checkpoint_record(head, checkpoint.envelope, cosig, 1.0))


def test_an_honest_log_passes_and_zero_checkpoints_fail() -> None:
    log = Log()
    log.add(5, at=1000)
    verdict = log.verify()
    assert [f.kind for f in verdict.findings] == ["no_checkpoints"]
    log.sign(1010)
    assert log.verify().ok


def test_entries_long_after_a_checkpoint_was_due_fail() -> None:
    log = Log()
    log.add(5, at=1000)
    log.sign(1005)
    log.add(2, at=1010)  # a checkpoint is due at 1065: fine so far
    assert log.verify().ok
    log.add(1, at=1010 + 3 * EVERY)
    verdict = log.verify()
    assert [f.kind for f in verdict.findings] == ["stale_checkpoint"]
    assert verdict.first_bad == 6


def test_the_witness_copy_catches_deleted_checkpoints_and_a_rollback(tmp_path: Path) -> None:
    log = Log()
    log.add(5, at=1000)
    _witness(tmp_path / "w.jsonl", log, log.sign(1005))
    log.add(5, at=1010)
    _witness(tmp_path / "w.jsonl", log, log.sign(1015))
    assert log.verify(tmp_path / "w.jsonl").ok
    # The same store, rolled back to its first five entries and first checkpoint:
    rolled = Log()
    rolled.key, rolled.checkpointer = log.key, AuditCheckpointer(log.key)
    for entry in log.store.audit_entries(limit=5):
        rolled.store.append_audit(entry.event)
    rolled.checkpointer.feed(iter_stored(rolled.store))
    rolled.store.add_checkpoint(log.store.checkpoints()[0])
    assert rolled.verify().ok  # on its own, an older store is self-consistent
    verdict = rolled.verify(tmp_path / "w.jsonl")
    assert {f.kind for f in verdict.findings} >= {"rollback", "checkpoint_deleted"}
    assert verdict.first_bad == 6


def test_witness_alarms_on_file_are_findings(tmp_path: Path) -> None:
    log = Log()
    log.add(3, at=1000)
    log.sign(1003)
    append_record(tmp_path / "w.jsonl", alarm_record("fork", 3, "two heads", 5.0))
    kinds = [f.kind for f in log.verify(tmp_path / "w.jsonl").findings]
    assert kinds == ["witness_alarm_fork"]


def test_a_further_check_plugs_in_and_names_a_job() -> None:
    """How another module adds a check (e.g. jobs rows against their audit entries)."""
    log = Log()
    log.add(3, at=1000)
    log.sign(1003)

    def jobs_against_audit(ctx: VerifyContext) -> Iterator[Finding]:
        assert ctx.log.entries_checked == 3  # the log pass has run; the store is open
        assert ctx.store is log.store
        yield Finding(
            check="jobs", kind="job_row_mismatch", message="shots differ", job_id="j1", seq=2
        )

    verdict = log.verify(checks=[*CHECKS, NamedCheck(name="extra", run=jobs_against_audit)])
    assert not verdict.ok
    assert verdict.first_bad == 2
    assert verdict.to_dict()["findings"][0]["job_id"] == "j1"


def test_checks_run_in_order() -> None:
    assert [c.name for c in CHECKS] == [
        "log",
        "checkpoints_present",
        "checkpoint_fresh",
        "witness",
        "jobs",
    ]
