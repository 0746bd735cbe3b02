"""The jobs/results cross-check on the in-memory store: entries written before job.completed
carried result digests are checked against the device-signed receipt, and the audit log's own
job history must follow the job state machine. (The tampering table runs on real SQLite and
PostgreSQL stores in tests/integration/test_job_tampering.py.)"""

from __future__ import annotations

import dataclasses
import hashlib

from attestation.keys import KeyKind, SigningKey
from attestation.receipts import ReceiptClaims, result_digest, sign_receipt
from attestation.shot_memory import ShotMemory
from broker.audit.crosscheck import crosscheck_store
from broker.audit.model import AuditEvent
from broker.jobs.model import Circuit, Job, JobResult, JobState, Lease
from broker.jobs.result_digests import completed_detail
from broker.store.memory import MemoryStore
from qtestbed.shared.circuits import CircuitFormat

DEVICE_KEY = SigningKey.generate(KeyKind.ECDSA_P256)
PAYLOAD = b'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[1];\n'
COUNTS = {"0": 60, "1": 40}


def _job(job_id: str) -> Job:
    circuit = Circuit(
        format=CircuitFormat.OPENQASM2,
        payload=PAYLOAD,
        digest=hashlib.sha256(PAYLOAD).hexdigest(),
        num_qubits=1,
        depth=1,
    )
    return Job(
        job_id=job_id,
        owner="alice",
        device_id="dev-a",
        circuit=circuit,
        shots=100,
        state=JobState.QUEUED,
        created_at=1.0,
        updated_at=1.0,
        project="p",
    )


def _event(kind: str, actor: str, subject: str, detail: dict[str, object]) -> AuditEvent:
    return AuditEvent(kind=kind, actor=actor, subject=subject, at=2.0, detail=detail)


def _submitted_detail(job: Job) -> dict[str, object]:
    return {"device": "dev-a", "circuit_digest": job.circuit.digest, "shots": 100, "project": "p"}


def _result(job: Job, counts: dict[str, int], memory_digest: str = "") -> JobResult:
    claims = ReceiptClaims(
        job_id=job.job_id,
        device_id="dev-a",
        circuit_digest=job.circuit.digest,
        shots=job.shots,
        result_digest=result_digest(COUNTS),
        dispatch_nonce=b"n" * 32,
        evidence_digest="ee" * 32,
        issued_at=3.0,
        memory_digest=memory_digest,
    )
    receipt = sign_receipt(claims, DEVICE_KEY).to_json()
    return JobResult(
        job_id=job.job_id,
        device_id="dev-a",
        counts=counts,
        execution_seconds=0.1,
        receipt=receipt,
        stored_at=3.0,
    )


def _store() -> MemoryStore:
    store = MemoryStore()
    store.migrate()
    return store


def _completed(store: MemoryStore, job_id: str, *, counts: dict[str, int], old: bool) -> Job:
    """A job run to COMPLETED; `old`: its job.completed entry has only device and shots, as
    brokers wrote before result digests were logged."""
    job = _job(job_id)
    detail = {"device": "dev-a", "circuit_digest": job.circuit.digest, "shots": 100, "project": "p"}
    store.insert_job(job, _event("job.submitted", "alice", job_id, detail))
    lease = Lease(lease_id="l", device_id="dev-a", expires_at=9.0, dispatch_nonce=b"n" * 32)
    leased = job.transition(JobState.DISPATCHED, now=2.0, lease=lease)
    store.save_job(leased, expected_version=1, event=_event("job.dispatched", "broker", job_id, {}))
    done = leased.transition(JobState.COMPLETED, now=3.0)
    result = _result(job, counts)
    completed = {"device": "dev-a", "shots": 100} if old else completed_detail(result, 100)
    event = _event("job.completed", "broker", job_id, completed)
    assert store.save_job(done, expected_version=2, event=event, result=result)
    return done


def test_an_honest_store_with_old_and_new_entries_has_no_findings() -> None:
    store = _store()
    _completed(store, "old", counts=COUNTS, old=True)
    _completed(store, "new", counts=COUNTS, old=False)
    assert crosscheck_store(store) == []


def test_counts_behind_an_old_entry_are_checked_against_the_signed_receipt() -> None:
    store = _store()
    _completed(store, "old", counts={"0": 61, "1": 39}, old=True)
    [finding] = crosscheck_store(store)
    assert finding.job_id == "old"
    assert finding.seq == 3  # its job.completed entry
    assert "digest the device signed in the receipt" in finding.problem


def test_stored_memory_other_than_the_device_signed_is_a_finding() -> None:
    signed = ShotMemory.from_bitstrings(["0"] * 60 + ["1"] * 40, 1)
    edited = ShotMemory.from_bitstrings(["1"] + ["0"] * 60 + ["1"] * 39, 1)  # same counts
    for stored, expected in (
        (signed, []),
        (edited, ["the stored per-shot memory does not match the digest the device signed"]),
        (None, ["the stored result has no per-shot memory; its receipt binds some"]),
    ):
        store = _store()
        job = _job("m")
        store.insert_job(job, _event("job.submitted", "alice", "m", _submitted_detail(job)))
        lease = Lease(lease_id="l", device_id="dev-a", expires_at=9.0, dispatch_nonce=b"n" * 32)
        leased = job.transition(JobState.DISPATCHED, now=2.0, lease=lease)
        store.save_job(
            leased, expected_version=1, event=_event("job.dispatched", "broker", "m", {})
        )
        result = _result(job, COUNTS, memory_digest=signed.digest())
        if stored is not None:
            result = dataclasses.replace(result, memory=stored.packed, memory_width=1)
        event = _event("job.completed", "broker", "m", completed_detail(result, 100))
        done = leased.transition(JobState.COMPLETED, now=3.0)
        assert store.save_job(done, expected_version=2, event=event, result=result)
        assert [f.problem for f in crosscheck_store(store)] == expected


def test_a_history_the_state_machine_forbids_is_named_at_its_entry() -> None:
    store = _store()
    done = _completed(store, "j", counts=COUNTS, old=False)
    # A later entry claims the COMPLETED job failed (and the row agrees): both are findings.
    failed = dataclasses.replace(done, state=JobState.FAILED, version=done.version + 1)
    event = _event("job.failed", "broker", "j", {"reason": "x"})
    assert store.save_job(failed, expected_version=done.version, event=event)
    problems = {(f.seq, f.problem.split(",")[0]) for f in crosscheck_store(store)}
    assert (4, "job.failed moves the job COMPLETED -> FAILED") in problems
