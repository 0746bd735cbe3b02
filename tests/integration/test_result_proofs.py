"""Audit inclusion proofs of results, from a real broker with a real driver: a researcher's
bundle proves its job.completed entry is in a checkpoint the broker signed, offline, against the
pinned broker certificate; someone else's job gets the answer a missing one gets."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from attestation.keys import VerifyKey
from attestation.pki import cert_from_pem
from qtestbed.cli.demo import ghz_qasm2
from qtestbed.client import Client, QtestbedError, bundle_of
from qtestbed.receipt_bundle import verify_bundle
from qtestbed.testing import LocalFacility, eventually
from tests.integration.support import db_path, wait_state


def _key(pem_path: Path) -> VerifyKey:
    return VerifyKey.from_cryptography(cert_from_pem(pem_path.read_bytes()).public_key())


def _checkpoint_sizes(facility: LocalFacility) -> list[int]:
    with sqlite3.connect(db_path(facility)) as conn:
        return [int(r[0]) for r in conn.execute("SELECT tree_size FROM audit_checkpoints")]


def _completed(client: Client, width: int = 3) -> str:
    job = client.submit(ghz_qasm2(width), device_id="sim-open", shots=200).job
    return wait_state(client, job.job_id, "COMPLETED").job_id


def test_a_saved_bundle_proves_its_result_is_in_the_signed_log(running: LocalFacility) -> None:
    """Checkpoints come every 100 entries or 60 s: none covers the fresh entry, so the broker
    signs one when the researcher asks, and the proof verifies against the broker's key only."""
    alice = running.client("alice")
    job_id = _completed(alice)
    before = _checkpoint_sizes(running)
    proof = alice.result_proof(job_id)
    after = _checkpoint_sizes(running)
    assert max(after, default=0) >= proof.tree_size > max(before, default=0)
    assert proof.tree_size in after
    bundle = bundle_of(alice.result(job_id), alice.get_job(job_id), proof)
    ca = (running.root / "ca" / "ca.pem").read_bytes()
    broker_key = _key(running.root / "broker" / "broker.pem")
    verdict = verify_bundle(bundle, ca, audit_key=broker_key)
    assert verdict.problems == []
    assert verdict.audit_inclusion == "verified"
    # The same proof under another key (here the facility root's) is worthless.
    wrong = verify_bundle(bundle, ca, audit_key=_key(running.root / "ca" / "ca.pem"))
    assert any("not signed" in p for p in wrong.problems)
    # Asking again serves the same checkpoint: nothing new is signed for it.
    assert alice.result_proof(job_id) == proof
    assert _checkpoint_sizes(running) == after


@pytest.fixture
def eager(tmp_path: Path) -> Iterator[LocalFacility]:
    """A broker that signs a checkpoint on every tick with anything new."""
    with LocalFacility(tmp_path / "eager", timing={"checkpoint_every_entries": 1}) as fac:
        fac.start_broker()
        fac.start_driver("sim-open")
        fac.wait_available(fac.client("olivia"), "sim-open")
        yield fac


def test_a_later_checkpoint_covering_the_entry_is_used(eager: LocalFacility) -> None:
    alice = eager.client("alice")
    first = _completed(alice, 2)
    second = _completed(alice, 3)
    with sqlite3.connect(db_path(eager)) as conn:
        (last,) = conn.execute(
            "SELECT seq FROM audit_log WHERE subject = ? AND kind = 'job.completed'", (second,)
        ).fetchone()
    eventually(lambda: max(_checkpoint_sizes(eager), default=0) >= last, what="a checkpoint")
    proof = alice.result_proof(first)
    assert proof.tree_size >= last  # the newest covering checkpoint, not the first one
    assert proof.tree_size in _checkpoint_sizes(eager)
    assert proof.leaf_index + 1 < proof.tree_size  # entries after it are covered too
    bundle = bundle_of(alice.result(first), alice.get_job(first), proof)
    ca = (eager.root / "ca" / "ca.pem").read_bytes()
    verdict = verify_bundle(bundle, ca, audit_key=_key(eager.root / "broker" / "broker.pem"))
    assert verdict.problems == []


def test_someone_elses_job_answers_like_a_missing_one(running: LocalFacility) -> None:
    alice, bob = running.client("alice"), running.client("bob")
    job_id = _completed(alice)
    answers = []
    for ident in (job_id, "f" * 32):
        with pytest.raises(QtestbedError) as refused:
            bob.result_proof(ident)
        answers.append((refused.value.code, refused.value.message.replace(ident, "X")))
    assert answers[0] == answers[1]
    assert answers[0][0] == "NOT_FOUND"


def test_no_proof_is_served_for_an_entry_edited_in_the_database(running: LocalFacility) -> None:
    """The broker compares the entry it re-reads with the leaf it hashed before: a database
    edit made after that gets no proof (which would not verify anyway), and says why."""
    alice = running.client("alice")
    first = _completed(alice, 2)
    alice.result_proof(first)  # the broker has now read and hashed the entry
    second = _completed(alice, 3)
    with sqlite3.connect(db_path(running)) as conn:
        edited_rows = conn.execute(
            "UPDATE audit_log SET detail = replace(detail, '\"shots\":200', '\"shots\":999') "
            "WHERE subject = ? AND kind = 'job.completed'",
            (first,),
        ).rowcount
    assert edited_rows == 1
    # The second job's proof is against a checkpoint of what the broker read: still sound.
    proof = alice.result_proof(second)
    bundle = bundle_of(alice.result(second), alice.get_job(second), proof)
    ca = (running.root / "ca" / "ca.pem").read_bytes()
    key = _key(running.root / "broker" / "broker.pem")
    assert verify_bundle(bundle, ca, audit_key=key).problems == []
    with pytest.raises(QtestbedError) as edited:
        alice.result_proof(first)
    assert edited.value.code == "UNAVAILABLE"
    assert "changed since the broker read it" in edited.value.message
