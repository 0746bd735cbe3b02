"""Write the seed corpora from real messages made by the project's own encoders:
`python -m fuzz.make_seeds` (rewrites fuzz/seeds; the keys are fixed, see `fuzz.world`)."""

from __future__ import annotations

import hashlib
import io
import shutil

from qiskit import QuantumCircuit, qpy

from attestation._json import canonical_dumps
from attestation.audit_inclusion import CHECKPOINT_PAYLOAD_TYPE, InclusionProof
from attestation.dsse import sign_envelope
from attestation.evidence import EvidenceClaims, Measurements, make_evidence
from attestation.pki import cert_to_pem, create_ca, device_uri, issue_certificate
from attestation.receipts import ReceiptClaims, encode_receipt, result_digest, sign_receipt
from attestation.shot_memory import ShotMemory
from fuzz import receipts, world
from fuzz.targets import NAMES
from qtestbed.receipt_bundle import ResultBundle
from qtestbed.v1 import devices_pb2, driver_link_pb2, jobs_pb2

QASM2 = (
    b'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\ncreg c[2];\n'
    b"h q[0];\ncx q[0],q[1];\nmeasure q -> c;\n",
    b'OPENQASM 2.0;\ninclude "qelib1.inc";\ngate g(a) x, y { rz(a/2) x; cx x, y; }\n'
    b"qreg q[3];\ncreg c[3];\ng(pi) q[0], q[2];\nbarrier q;\nif (c==1) x q[1];\n"
    b"measure q[0] -> c[0];\nreset q[1];\n",
)
QASM3 = (
    b'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[2] q;\nbit[2] c;\n'
    b"h q[0];\ncx q[0], q[1];\nc = measure q;\n",
    b'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[3] q;\nbit[3] c;\n'
    b"for int i in [0:1] { rx(pi/4) q[i]; }\nc[0] = measure q[0];\n"
    b"if (c[0]) { x q[2]; }\nbarrier q;\nc[1] = measure $1;\n",
)


def _qpy_seeds() -> list[bytes]:
    bell = QuantumCircuit(2, 2)
    bell.h(0)
    bell.cx(0, 1)
    bell.measure([0, 1], [0, 1])
    param = QuantumCircuit(3)
    param.rx(0.5, 0)
    param.ccx(0, 1, 2)
    param.measure_all()
    out = []
    for circuit in (bell, param):
        buffer = io.BytesIO()
        qpy.dump(circuit, buffer)
        out.append(buffer.getvalue())
    return out


def _submit_seeds() -> list[bytes]:
    circuit = jobs_pb2.Circuit(format=jobs_pb2.CIRCUIT_FORMAT_OPENQASM2, payload=QASM2[0])
    one = jobs_pb2.SubmitJobRequest(
        device_id="qpu-1", circuit=circuit, shots=100, idempotency_key="k-1", project="p"
    )
    selected = jobs_pb2.SubmitJobRequest(
        circuit=circuit,
        shots=10,
        selector=jobs_pb2.DeviceSelector(
            min_qubits=2, basis_gates=["cx", "rz"], tier="gold", max_two_qubit_error=0.02
        ),
        priority=jobs_pb2.JOB_PRIORITY_HIGH,
        session_id="s-1",
        memory=True,
    )
    batch = jobs_pb2.SubmitJobsRequest(jobs=[one, selected])
    return [m.SerializeToString() for m in (one, selected, batch)]


def _claims() -> EvidenceClaims:
    return EvidenceClaims(
        device_id=world.DEVICE_ID,
        nonce=bytes(range(32)),
        issued_at=world.NOW,
        boot_epoch="boot-1",
        counter=7,
        measurements=Measurements(
            firmware="fw-1",
            control_software="ctl-1",
            driver_build="drv-1",
            calibration_digest="c" * 64,
            num_qubits=5,
            two_qubit_error=0.01,
            readout_error=0.02,
            t1_us=80.0,
        ),
    )


def _receipt(evidence_digest: str) -> bytes:
    claims = ReceiptClaims(
        job_id=receipts.JOB_ID,
        device_id=world.DEVICE_ID,
        circuit_digest=receipts.CIRCUIT_DIGEST,
        shots=receipts.SHOTS,
        result_digest=result_digest(receipts.COUNTS),
        dispatch_nonce=receipts.NONCE,
        evidence_digest=evidence_digest,
        issued_at=world.NOW,
        executed_circuit_digest=receipts.CIRCUIT_DIGEST,  # ran as sent
    )
    assert encode_receipt(claims)
    return sign_receipt(claims, world.DEVICE_KEY).to_json()


def _inclusion_proof() -> InclusionProof:
    event = {
        "actor": "broker",
        "at": world.NOW,
        "detail": {
            "device": world.DEVICE_ID,
            "shots": receipts.SHOTS,
            "result_digest": result_digest(receipts.COUNTS),
        },
        "kind": "job.completed",
        "subject": receipts.JOB_ID,
    }
    entry = (1).to_bytes(8, "big") + bytes(32) + canonical_dumps(event)
    root = hashlib.sha256(b"\x00" + entry).hexdigest()
    checkpoint = {"at": world.NOW, "root_hash": root, "tree_size": 1}
    envelope = sign_envelope(CHECKPOINT_PAYLOAD_TYPE, canonical_dumps(checkpoint), world.AUDIT_KEY)
    return InclusionProof(
        entry=entry, leaf_index=0, tree_size=1, audit_path=(), checkpoint=envelope.to_json()
    )


def _world() -> tuple[bytes, bytes]:
    start = world.NOW_DT
    root = create_ca("qtestbed fuzz root", world.ROOT_KEY, now=start, days=3650, path_length=0)
    device = issue_certificate(
        ca_key=world.ROOT_KEY,
        ca_cert=root,
        subject_cn=world.DEVICE_ID,
        public_key=world.DEVICE_KEY.public_key,
        now=start,
        days=3650,
        uris=[device_uri(world.DEVICE_ID)],
        client=True,
    )
    return cert_to_pem(root), cert_to_pem(device)


def seeds() -> dict[str, list[bytes]]:
    anchor, chain = _world()
    evidence = make_evidence(_claims(), world.DEVICE_KEY)
    receipt = _receipt(evidence.digest())
    proof = _inclusion_proof()
    memory = ShotMemory.from_bitstrings(["00"] * 60 + ["11"] * 40, 2)
    bundle = ResultBundle(
        job_id=receipts.JOB_ID,
        device_id=world.DEVICE_ID,
        circuit_digest=receipts.CIRCUIT_DIGEST,
        shots=receipts.SHOTS,
        counts=receipts.COUNTS,
        receipt=receipt,
        device_certificate_chain=chain,
        evidence=evidence.to_json(),
        audit_inclusion=proof,
        executed_circuit=b"",
    )
    link = [
        driver_link_pb2.LinkMessage(
            hello=driver_link_pb2.Hello(
                device_id=world.DEVICE_ID,
                num_qubits=5,
                basis_gates=["cx", "rz", "sx"],
                coupling_map=[devices_pb2.CouplingEdge(control=0, target=1)],
                backend="aer",
                driver_build="drv-1",
                certificate_chain=chain,
            )
        ),
        driver_link_pb2.LinkMessage(
            evidence=driver_link_pb2.EvidenceMessage(envelope=evidence.to_json())
        ),
        driver_link_pb2.LinkMessage(
            result=driver_link_pb2.LeaseResult(
                lease_id="l-1",
                job_id=receipts.JOB_ID,
                counts=receipts.COUNTS,
                execution_seconds=0.5,
                receipt=receipt,
                memory=memory.packed,
                memory_width=2,
            )
        ),
        driver_link_pb2.LinkMessage(
            failure=driver_link_pb2.LeaseFailure(lease_id="l-1", job_id="j", error="boom")
        ),
        driver_link_pb2.LinkMessage(heartbeat=driver_link_pb2.Heartbeat(seq=3)),
        driver_link_pb2.LinkMessage(
            goodbye=driver_link_pb2.Goodbye(reason="bye", code=driver_link_pb2.GOODBYE_CODE_REVOKED)
        ),
    ]
    return {
        "world": [anchor, chain],
        "submit_jobs": _submit_seeds(),
        "qasm2": list(QASM2),
        "qasm3": list(QASM3),
        "qpy": _qpy_seeds(),
        "link_frames": [m.SerializeToString() for m in link],
        "evidence": [evidence.to_json()],
        "receipts": [receipt],
        "result_bundle": [bundle.to_json().encode(), bundle_without_extras(bundle)],
        "audit_inclusion": [canonical_dumps(proof.to_dict()), proof.entry],
    }


def bundle_without_extras(bundle: ResultBundle) -> bytes:
    bare = ResultBundle(
        job_id=bundle.job_id,
        device_id=bundle.device_id,
        circuit_digest=bundle.circuit_digest,
        shots=bundle.shots,
        counts=bundle.counts,
        receipt=bundle.receipt,
        device_certificate_chain=bundle.device_certificate_chain,
    )
    return bare.to_json().encode()


def main() -> None:
    corpora = seeds()
    assert set(corpora) == {"world", *NAMES}
    for name, inputs in corpora.items():
        folder = world.SEEDS / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        if name == "world":
            (folder / "anchor.pem").write_bytes(inputs[0])
            (folder / "device-chain.pem").write_bytes(inputs[1])
            continue
        for data in inputs:
            (folder / hashlib.sha256(data).hexdigest()[:16]).write_bytes(data)
        print(f"{name}: {len(inputs)} seeds")


if __name__ == "__main__":
    main()
