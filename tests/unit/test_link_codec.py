"""The driver-link codec: the one place link frames become domain messages and back."""

from __future__ import annotations

import pytest
import zmq
from zmq.utils import z85

from broker.jobs.model import Circuit
from broker.link import codec
from broker.link import messages as m
from drivers.grants import GrantError, GrantKey, open_grant
from qtestbed.shared.circuits import CircuitFormat
from qtestbed.v1 import devices_pb2, jobs_pb2
from qtestbed.v1 import driver_link_pb2 as pb


def _frame(**body: object) -> bytes:
    return pb.LinkMessage(**body).SerializeToString()  # type: ignore[arg-type]


def test_each_driver_message_decodes_to_its_domain_form() -> None:
    hello = pb.Hello(
        device_id="dev-a",
        num_qubits=5,
        basis_gates=["cx", "rz"],
        coupling_map=[devices_pb2.CouplingEdge(control=0, target=1)],
        certificate_chain=b"PEM",
        grant_key=b"k" * 32,
    )
    assert codec.decode(_frame(hello=hello)) == m.Hello(
        device_id="dev-a",
        num_qubits=5,
        basis_gates=("cx", "rz"),
        coupling_map=((0, 1),),
        backend="",
        driver_build="",
        certificate_chain=b"PEM",
        grant_key=b"k" * 32,
    )
    result = pb.LeaseResult(lease_id="l", job_id="j", counts={"00": 3}, receipt=b"R")
    assert codec.decode(_frame(result=result)) == m.LeaseResult(
        lease_id="l", job_id="j", counts={"00": 3}, execution_seconds=0.0, receipt=b"R"
    )
    failure = pb.LeaseFailure(lease_id="l", job_id="j", error="boom", permanent=True)
    assert codec.decode(_frame(failure=failure)) == m.LeaseFailure(
        lease_id="l", job_id="j", error="boom", permanent=True
    )
    bye = pb.Goodbye(reason="done", code=pb.GOODBYE_CODE_SHUTTING_DOWN)
    assert codec.decode(_frame(goodbye=bye)) == m.Goodbye(
        reason="done", code=m.GoodbyeCode.SHUTTING_DOWN
    )


@pytest.mark.parametrize(
    "frame",
    [
        b"\xff\xfe not protobuf",
        b"",  # a LinkMessage with no body
        _frame(lease=pb.LeaseGrant(lease_id="l")),  # a body only the broker sends
        _frame(challenge=pb.Challenge(nonce=b"n")),
    ],
)
def test_a_frame_that_is_no_driver_message_decodes_to_nothing(frame: bytes) -> None:
    assert codec.decode(frame) is None


def test_a_goodbye_code_from_a_newer_peer_reads_as_unspecified() -> None:
    bye = pb.LinkMessage()
    bye.goodbye.reason = "?"
    bye.goodbye.code = 99  # type: ignore[assignment]
    decoded = codec.decode(bye.SerializeToString())
    assert decoded == m.Goodbye(reason="?", code=m.GoodbyeCode.UNSPECIFIED)


def test_a_lease_grant_carries_the_circuit_sealed_to_the_grant_key_in_its_wire_format() -> None:
    link_public, link_secret = zmq.curve_keypair()
    link_key = z85.decode(link_public)
    grant_key = GrantKey.new()
    circuit = Circuit(
        format=CircuitFormat.OPENQASM3,
        payload=b"OPENQASM 3;",
        digest="d" * 64,
        num_qubits=2,
        depth=1,
    )
    grant = m.LeaseGrant(
        grant_key=grant_key.public,
        lease_id="l",
        job_id="j",
        circuit=circuit,
        shots=9,
        dispatch_nonce=b"n" * 32,
        lease_seconds=5,
    )
    frame = pb.LinkMessage()
    frame.ParseFromString(codec.encode(grant, link_key=link_key))
    assert b"OPENQASM 3;" not in frame.SerializeToString()  # only the grant key's holder reads it
    opened = open_grant(frame.lease, grant_key, link_key=link_key)
    assert opened.circuit_format == jobs_pb2.CIRCUIT_FORMAT_OPENQASM3
    assert (opened.circuit_payload, opened.shots) == (b"OPENQASM 3;", 9)
    # Not with the link secret key the connection proved, nor another connection's grant key.
    for wrong in (GrantKey.from_secret(z85.decode(link_secret)), GrantKey.new()):
        with pytest.raises(GrantError, match="does not open"):
            open_grant(frame.lease, wrong, link_key=link_key)
    other_public, _other_secret = zmq.curve_keypair()
    with pytest.raises(GrantError, match="does not open"):  # bound to the connection's link key
        open_grant(frame.lease, grant_key, link_key=z85.decode(other_public))
    with pytest.raises(GrantError, match="not sealed"):
        open_grant(opened, grant_key, link_key=link_key)
    bye = pb.LinkMessage()
    goodbye = m.Goodbye(reason="r", code=m.GoodbyeCode.REVOKED)
    bye.ParseFromString(codec.encode(goodbye, link_key=z85.decode(other_public)))
    assert bye.goodbye.code == pb.GOODBYE_CODE_REVOKED
