"""Driver-link frames <-> domain messages: the one place link protobuf is read or written.

A frame that is not a LinkMessage, or carries no body, decodes to None and is counted by the
socket; nothing undecoded reaches the hub.
"""

from __future__ import annotations

from collections.abc import Mapping

from google.protobuf.message import DecodeError

from attestation.sealing import seal
from broker.link import messages as m
from qtestbed.shared.wire import format_to_proto, lease_grant_seal_context
from qtestbed.v1 import driver_link_pb2 as pb

_GOODBYE_TO_PROTO: Mapping[m.GoodbyeCode, pb.GoodbyeCode.ValueType] = {
    m.GoodbyeCode.UNSPECIFIED: pb.GOODBYE_CODE_UNSPECIFIED,
    m.GoodbyeCode.UNKNOWN_DEVICE: pb.GOODBYE_CODE_UNKNOWN_DEVICE,
    m.GoodbyeCode.HELLO_FIRST: pb.GOODBYE_CODE_HELLO_FIRST,
    m.GoodbyeCode.REVOKED: pb.GOODBYE_CODE_REVOKED,
    m.GoodbyeCode.SHUTTING_DOWN: pb.GOODBYE_CODE_SHUTTING_DOWN,
    m.GoodbyeCode.WRONG_KEY: pb.GOODBYE_CODE_WRONG_KEY,
    m.GoodbyeCode.TOO_MANY_HELLOS: pb.GOODBYE_CODE_TOO_MANY_HELLOS,
    m.GoodbyeCode.TOO_MANY_CONNECTIONS: pb.GOODBYE_CODE_TOO_MANY_CONNECTIONS,
    m.GoodbyeCode.NO_GRANT_KEY: pb.GOODBYE_CODE_NO_GRANT_KEY,
}
_GOODBYE_FROM_PROTO = {value: code for code, value in _GOODBYE_TO_PROTO.items()}


def decode(frame: bytes) -> m.Inbound | None:
    """The message a driver sent, or None when the frame is not one (or not one for us)."""
    message = pb.LinkMessage()
    try:
        message.ParseFromString(frame)
    except DecodeError:
        return None
    kind = message.WhichOneof("body")
    if kind == "hello":
        return _hello(message.hello)
    if kind == "evidence":
        return m.Evidence(envelope=message.evidence.envelope)
    if kind == "started":
        return m.LeaseStarted(lease_id=message.started.lease_id, job_id=message.started.job_id)
    if kind == "result":
        return _result(message.result)
    if kind == "failure":
        f = message.failure
        return m.LeaseFailure(
            lease_id=f.lease_id, job_id=f.job_id, error=f.error, permanent=f.permanent
        )
    if kind == "heartbeat":
        return m.Heartbeat(
            seq=message.heartbeat.seq, active_lease_id=message.heartbeat.active_lease_id
        )
    if kind == "goodbye":
        return _goodbye(message.goodbye)
    return None  # no body, or one only the broker sends


def _hello(h: pb.Hello) -> m.Hello:
    return m.Hello(
        device_id=h.device_id,
        num_qubits=h.num_qubits,
        basis_gates=tuple(h.basis_gates),
        coupling_map=tuple((e.control, e.target) for e in h.coupling_map),
        backend=h.backend,
        driver_build=h.driver_build,
        certificate_chain=h.certificate_chain,
        grant_key=h.grant_key,
        resuming_lease_id=h.resuming_lease_id,
        max_leases=max(1, h.max_leases),
    )


def _result(r: pb.LeaseResult) -> m.LeaseResult:
    return m.LeaseResult(
        lease_id=r.lease_id,
        job_id=r.job_id,
        counts=dict(r.counts),
        execution_seconds=r.execution_seconds,
        receipt=r.receipt,
        executed_circuit=r.executed_circuit,
        memory=r.memory,
        memory_width=r.memory_width,
    )


def _goodbye(g: pb.Goodbye) -> m.Goodbye:
    code = _GOODBYE_FROM_PROTO.get(g.code, m.GoodbyeCode.UNSPECIFIED)
    return m.Goodbye(reason=g.reason, code=code)


def encode(message: m.Outbound, *, link_key: bytes) -> bytes:
    """The frame for one message to the connection whose proved raw CurveZMQ public key is
    `link_key`: a lease grant is sealed to the grant key it names, bound to `link_key`."""
    return _wrap(message, link_key).SerializeToString()


def _wrap(message: m.Outbound, link_key: bytes) -> pb.LinkMessage:
    match message:
        case m.Challenge():
            return pb.LinkMessage(
                challenge=pb.Challenge(
                    nonce=message.nonce, deadline_seconds=message.deadline_seconds
                )
            )
        case m.Verdict():
            verdict = pb.AttestationVerdict(
                affirming=message.affirming,
                reasons=list(message.reasons),
                valid_for_seconds=message.valid_for_seconds,
            )
            return pb.LinkMessage(verdict=verdict)
        case m.LeaseGrant():
            return pb.LinkMessage(lease=_sealed_grant(message, link_key))
        case m.LeaseCancel():
            return pb.LinkMessage(cancel=pb.LeaseCancel(lease_id=message.lease_id))
        case m.Heartbeat():
            beat = pb.Heartbeat(seq=message.seq, active_lease_id=message.active_lease_id)
            return pb.LinkMessage(heartbeat=beat)
        case m.Goodbye():
            bye = pb.Goodbye(reason=message.reason, code=_GOODBYE_TO_PROTO[message.code])
            return pb.LinkMessage(goodbye=bye)


def _sealed_grant(grant: m.LeaseGrant, link_key: bytes) -> pb.LeaseGrant:
    # To the connection's own grant key, never to its link key: another host holding the same
    # link key may be on the route (README "Driver link").
    plain = _grant(grant).SerializeToString()
    box = seal(grant.grant_key, plain, context=lease_grant_seal_context(link_key))
    sealed = pb.Sealed(
        ephemeral_public=box.ephemeral_public, nonce=box.nonce, ciphertext=box.ciphertext
    )
    return pb.LeaseGrant(sealed=sealed)


def _grant(grant: m.LeaseGrant) -> pb.LeaseGrant:
    return pb.LeaseGrant(
        lease_id=grant.lease_id,
        job_id=grant.job_id,
        circuit_format=format_to_proto(grant.circuit.format),
        circuit_payload=grant.circuit.payload,
        circuit_digest=grant.circuit.digest,
        shots=grant.shots,
        dispatch_nonce=grant.dispatch_nonce,
        lease_seconds=grant.lease_seconds,
        memory=grant.memory,
    )
