"""The same job path with the broker on PostgreSQL instead of SQLite."""

from __future__ import annotations

import pytest

from attestation.pki import cert_from_pem
from broker.embedded import EmbeddedBroker
from qtestbed.cli.demo import ghz_qasm2
from qtestbed.client import Client, QtestbedError, submit_request
from qtestbed.testing import LocalFacility, eventually
from qtestbed.v1 import access_pb2, credentials_pb2, credentials_pb2_grpc
from tests.integration.support import state_name, wait_state

pytestmark = pytest.mark.postgres


def test_ghz_completes_on_postgres_and_survives_a_broker_restart(
    pg_facility: LocalFacility,
) -> None:
    pg_facility.start_broker()
    alice = pg_facility.client("alice")
    queued = alice.submit(ghz_qasm2(3), device_id="sim-open", shots=300).job
    assert pg_facility.embedded is not None
    pg_facility.embedded.stop()
    pg_facility.start_broker()
    alice = pg_facility.client("alice")
    assert state_name(alice.get_job(queued.job_id)) == "QUEUED"
    pg_facility.start_driver("sim-open")
    done = wait_state(alice, queued.job_id, "COMPLETED")
    result = alice.result(done.job_id)
    assert set(result.counts) <= {"000", "111"}
    assert alice.verify_result(result, done) == []


def test_two_broker_replicas_share_queues_access_and_sessions(
    pg_facility: LocalFacility,
) -> None:
    """Two brokers on one PostgreSQL schema; the driver is connected to the first only."""
    first = pg_facility.start_broker()
    second = EmbeddedBroker(pg_facility.settings())
    second_address = second.start().grpc
    try:

        def via_second(name: str) -> Client:
            return pg_facility.client(name, broker=second_address)

        alice_b = via_second("alice")
        assert first.grpc != second_address
        pg_facility.start_driver("sim-open")
        # Jobs queued through the replica without the driver run through the one with it.
        jobs = [alice_b.submit(ghz_qasm2(3), device_id="sim-open", shots=50).job for _ in range(3)]
        for job in jobs:
            assert state_name(wait_state(alice_b, job.job_id, "COMPLETED")) == "COMPLETED"
        # An operator's change made on the first replica is enforced by the second.
        olivia = pg_facility.client("olivia")
        record = olivia.call(
            olivia.access.GetPrincipal, access_pb2.GetPrincipalRequest(name="alice")
        )
        record.principal.clearance_expires_at.FromSeconds(1_577_836_800)
        olivia.call(
            olivia.access.PutPrincipal,
            access_pb2.PutPrincipalRequest(
                principal=record.principal, expected_version=record.meta.version
            ),
        )

        def refused() -> str | None:
            try:
                alice_b.device("sim-open")
            except QtestbedError as exc:
                return exc.code
            return None

        # An expired clearance hides the device: NOT_FOUND, as for one that does not exist.
        assert eventually(refused, what="the second replica to see the change") == "NOT_FOUND"
        # One session per device across replicas.
        bob_a, bob_b = pg_facility.client("bob"), via_second("bob")
        bob_a.open_session("sim-open")
        with pytest.raises(QtestbedError) as busy:
            bob_b.open_session("sim-open")
        assert busy.value.code == "FAILED_PRECONDITION"
        for client in (alice_b, bob_b):
            client.close()
    finally:
        second.stop()


def test_a_revocation_through_one_replica_holds_on_the_other_at_the_next_call(
    pg_facility: LocalFacility,
) -> None:
    """Revoked through the first replica; the second refuses alice's very next call and ends
    her open WatchJob stream."""
    pg_facility.start_broker()
    second = EmbeddedBroker(pg_facility.settings())
    second_address = second.start().grpc
    alice_b = pg_facility.client("alice", broker=second_address)
    try:
        job = alice_b.submit(ghz_qasm2(2), device_id="sim-open", shots=10).job
        stream = alice_b.watch(job.job_id, timeout=30)
        assert next(stream).job_id == job.job_id  # open on the second replica
        certificate = cert_from_pem((pg_facility.root / "users" / "alice.pem").read_bytes())
        serial = format(certificate.serial_number, "x")
        sam = pg_facility.client("sam")  # the first replica
        sam.call(
            credentials_pb2_grpc.CredentialServiceStub(sam.channel).RevokeCredential,
            credentials_pb2.RevokeCredentialRequest(serial=serial, reason="left the lab"),
        )
        with pytest.raises(QtestbedError) as refused:
            alice_b.get_job(job.job_id)
        assert refused.value.code == "UNAUTHENTICATED"
        with pytest.raises(QtestbedError) as ended:
            for _ in stream:
                pass
        assert ended.value.code == "UNAUTHENTICATED"
        assert "revoked" in ended.value.message
    finally:
        alice_b.close()
        second.stop()


def test_positions_answered_by_two_replicas_are_the_queue_order(
    pg_facility: LocalFacility,
) -> None:
    """Submissions through two replicas, singly and in batches, with no driver to move the
    queue: each answer's position is where the job then stands (counted by the store, which
    sees the other replica's inserts), so the answers together are 1..N and each job still
    reads back at the position it was given."""
    pg_facility.start_broker()
    second = EmbeddedBroker(pg_facility.settings())
    second_address = second.start().grpc
    try:
        alice_a = pg_facility.client("alice")
        alice_b = pg_facility.client("alice", broker=second_address)
        answered: dict[str, int] = {}
        for round_ in range(4):
            for client in (alice_a, alice_b):
                one = client.submit(ghz_qasm2(2), device_id="sim-open", shots=10).job
                answered[one.job_id] = one.queue_position
                batch = [
                    submit_request(ghz_qasm2(2), device_id="sim-open", shots=10 + round_)
                    for _ in range(5)
                ]
                for response in client.submit_many(batch):
                    answered[response.job.job_id] = response.job.queue_position
        assert sorted(answered.values()) == list(range(1, len(answered) + 1))
        for job_id, position in answered.items():
            assert alice_b.get_job(job_id).queue_position == position
        alice_b.close()
    finally:
        second.stop()
