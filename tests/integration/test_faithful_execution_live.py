"""Faithful execution through a real broker and a real noisy driver process: what ran is what
the receipt names, and the researcher can fetch it."""

from __future__ import annotations

import hashlib

from qiskit import QuantumCircuit, qasm3

from attestation.dsse import Envelope
from attestation.receipts import decode_receipt
from drivers.config import load_driver_config
from qtestbed.client import verify_result_offline
from qtestbed.testing import LocalFacility
from qtestbed.v1 import admin_pb2
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


def test_exact_device_refuses_a_circuit_it_would_have_to_translate(
    running: LocalFacility,
) -> None:
    """A device set to `execution = "exact"` (an attested setting: it is in the calibration
    digest) fails the job permanently, naming the first instruction it cannot run as sent."""
    source = running.root / "drivers" / "sim-restricted.toml"
    exact = running.root / "drivers" / "sim-restricted-exact.toml"
    exact.write_text(source.read_text() + 'execution = "exact"\n')
    digest = load_driver_config(exact).device.calibration_digest()
    _accept_calibration(running, "sim-restricted", digest)
    running.start_driver("sim-restricted", config=exact)
    bob = running.client("bob")
    running.wait_available(bob, "sim-restricted")
    refused = bob.submit(NEEDS_TRANSLATION.encode(), device_id="sim-restricted", shots=50).job
    failed = wait_state(bob, refused.job_id, "COMPLETED", "FAILED")
    assert state_name(failed) == "FAILED"
    assert "runs circuits exactly as sent" in failed.reason
    assert "instruction 0 (h on qubits [0]) is not in the device's basis gates" in failed.reason
    assert failed.attempts == 1  # permanent: no other device could run it as sent either
    ran = bob.submit(CX_PAIRS.encode(), device_id="sim-restricted", shots=50).job
    assert state_name(wait_state(bob, ran.job_id, "COMPLETED", "FAILED")) == "COMPLETED"


def _accept_calibration(running: LocalFacility, device_id: str, digest: str) -> None:
    """The operator publishes reference values that also accept `digest`."""
    olivia = running.client("olivia")
    scope = admin_pb2.REFERENCE_SCOPE_DEVICE
    listed = olivia.call(
        olivia.admin.ListReferenceValues,
        admin_pb2.ListReferenceValuesRequest(scope=scope, scope_id=device_id),
    )
    values = admin_pb2.ReferenceValues()
    values.CopyFrom(listed.versions[0])
    values.calibration_digest.append(digest)
    olivia.call(olivia.admin.SetReferenceValues, admin_pb2.SetReferenceValuesRequest(values=values))


def test_a_delay_relaxes_the_qubit_on_the_real_noisy_device(running: LocalFacility) -> None:
    """x, then 5 T1 of delay: the real driver runs the delay with the device's T1 (from its
    description, attested in its evidence), so |1> has decayed; without the delay it has not."""
    _noisy(running)
    bob = running.client("bob")
    outcomes = {}
    for delay_us in (0.0, 500.0):
        qc = QuantumCircuit(1, 1)
        qc.x(0)
        qc.delay(delay_us, 0, unit="us")
        qc.measure(0, 0)
        # OpenQASM 3, not QPY: QPY drops a delay's unit (Qiskit #10662), OpenQASM 3 keeps it.
        payload = qasm3.dumps(qc).encode()
        job = bob.submit(payload, device_id="sim-restricted", shots=400, fmt="qasm3").job
        done = wait_state(bob, job.job_id, "COMPLETED", "FAILED")
        assert state_name(done) == "COMPLETED", done.reason
        result = bob.result(job.job_id)
        assert result.executed_circuit == b""  # ISA with its delay: run as sent
        assert bob.verify_result(result, done) == []
        outcomes[delay_us] = result.counts.get("1", 0) / 400
    # T1 = 100 us in `qtestbed init`'s sim-restricted: exp(-5) leaves <1% in |1>, plus 1%
    # readout error; without a delay only gate and readout error take |1> away.
    assert outcomes[0.0] > 0.9
    assert outcomes[500.0] < 0.1
