"""Faithful execution through a real broker and a real noisy driver process: what ran is what
the receipt names, and the researcher can fetch it."""

from __future__ import annotations

import hashlib

from qiskit import qasm3

from attestation.dsse import Envelope
from attestation.receipts import decode_receipt
from qtestbed.client import verify_result_offline
from qtestbed.testing import LocalFacility
from tests.integration.support import state_name, wait_state

HEADER = 'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\ncreg c[2];\n'
CX_PAIRS = HEADER + "cx q[0],q[1];\ncx q[0],q[1];\n" * 10 + "measure q -> c;\n"
NEEDS_TRANSLATION = HEADER + "h q[0];\ncx q[0],q[1];\ncx q[0],q[1];\nmeasure q -> c;\n"


def _noisy(running: LocalFacility) -> None:
    running.start_driver("sim-restricted")
    running.wait_available(running.client("bob"), "sim-restricted")


def test_isa_circuit_runs_as_sent_and_the_receipt_names_the_submitted_digest(
    running: LocalFacility,
) -> None:
    _noisy(running)
    bob = running.client("bob")
    job = bob.submit(CX_PAIRS.encode(), device_id="sim-restricted", shots=500).job
    done = wait_state(bob, job.job_id, "COMPLETED", "FAILED")
    assert state_name(done) == "COMPLETED", done.reason
    result = bob.result(job.job_id)
    receipt = decode_receipt(Envelope.from_json(result.receipt))
    assert done.circuit_digest == hashlib.sha256(CX_PAIRS.encode()).hexdigest()
    assert receipt.executed_circuit_digest == done.circuit_digest
    assert result.executed_circuit == b""  # ran exactly as submitted
    assert bob.verify_result(result, done) == []
    # 20 noisy CX (and T1 over their 6 us) leave a visible mark: not the identity it would be
    # if the pairs had been optimised away.
    assert result.counts.get("00", 0) < 500


def test_translated_circuit_is_fetched_and_bound_to_the_receipt(running: LocalFacility) -> None:
    _noisy(running)
    bob = running.client("bob")
    job = bob.submit(NEEDS_TRANSLATION.encode(), device_id="sim-restricted", shots=200).job
    done = wait_state(bob, job.job_id, "COMPLETED", "FAILED")
    assert state_name(done) == "COMPLETED", done.reason
    result = bob.result(job.job_id)
    receipt = decode_receipt(Envelope.from_json(result.receipt))
    executed = result.executed_circuit
    assert executed, "the device translated h, so it must report what it ran"
    assert receipt.executed_circuit_digest == hashlib.sha256(executed).hexdigest()
    assert receipt.executed_circuit_digest != done.circuit_digest
    ran = qasm3.loads(executed.decode())
    assert ran.count_ops()["cx"] == 2  # level 0: the identity pair was not cancelled
    assert "h" not in ran.count_ops()
    assert bob.verify_result(result, done) == []
    ca_pem = running.root.joinpath("ca/ca.pem").read_bytes()
    result.executed_circuit = executed.replace(b"cx", b"cz", 1)
    problems = verify_result_offline(result, done, ca_pem)
    assert "executed circuit does not match the digest the receipt names" in problems
