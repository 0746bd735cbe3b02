"""An open stream ends when a new call would be refused, on a real broker over real gRPC: a
security officer's StreamAudit when the security role is taken away (PERMISSION_DENIED), a
researcher's WatchJob when the principal is removed (UNAUTHENTICATED), and, with two replicas
on PostgreSQL, a stream on the replica that did not make the change. Each ending is counted by
reason and audited in aggregate."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg
import pytest

from broker.embedded import EmbeddedBroker
from qtestbed.cli.demo import ghz_qasm2
from qtestbed.client import Client, QtestbedError
from qtestbed.testing import LocalFacility, eventually
from qtestbed.v1 import access_pb2, admin_pb2
from tests.integration.support import audit_entries, metric_value, scrape


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalFacility]:
    with LocalFacility(tmp_path / "facility", timing={"front_door_audit_seconds": 0.3}) as fac:
        fac.start_broker()
        yield fac


def _follow_audit(client: Client) -> grpc.Future:
    request = admin_pb2.StreamAuditRequest(after_seq=0, follow=True)
    return client.audit.StreamAudit(request, timeout=60)


def _drain(stream: grpc.Future) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as ended:
        for _ in stream:
            pass
    return ended.value


def _demote(operator: Client, name: str) -> None:
    """The operator makes `name` a researcher only (no elevation: a plain edit)."""
    found = operator.call(operator.access.GetPrincipal, access_pb2.GetPrincipalRequest(name=name))
    del found.principal.roles[:]
    found.principal.roles.append("researcher")
    put = access_pb2.PutPrincipalRequest(
        principal=found.principal, expected_version=found.meta.version
    )
    operator.call(operator.access.PutPrincipal, put)


def _ended(facility: LocalFacility, reason: str) -> float:
    return metric_value(scrape(facility), "qtestbed_streams_ended_total", reason=reason)


def test_a_role_taken_away_ends_the_audit_stream_and_a_removed_principal_its_watch(
    broker: LocalFacility,
) -> None:
    sam, sean, alice = broker.client("sam"), broker.client("sean"), broker.client("alice")
    sams, seans = _follow_audit(sam), _follow_audit(sean)
    assert next(sams).seq >= 1
    assert next(seans).seq >= 1
    job = alice.submit(ghz_qasm2(2), device_id="sim-open", shots=10).job
    watch = alice.watch(job.job_id, timeout=60)
    assert next(watch).job_id == job.job_id

    olivia = broker.client("olivia")
    _demote(olivia, "sam")
    ended = _drain(sams)
    assert ended.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "security role" in (ended.details() or "")
    assert next(seans).seq >= 1  # sean keeps his role and his stream

    found = olivia.call(olivia.access.GetPrincipal, access_pb2.GetPrincipalRequest(name="alice"))
    olivia.call(
        olivia.access.DeletePrincipal,
        access_pb2.DeletePrincipalRequest(name="alice", expected_version=found.meta.version),
    )
    with pytest.raises(QtestbedError) as gone:
        for _ in watch:
            pass
    assert gone.value.code == "UNAUTHENTICATED"
    assert _ended(broker, "role_required") == 1
    assert _ended(broker, "unknown_principal") == 1
    eventually(
        lambda: (
            {
                (e.subject, e.detail["reason"])
                for e in audit_entries(broker)
                if e.kind == "edge.stream_ended"
            }
            >= {("sam", "role_required"), ("alice", "unknown_principal")}
        ),
        timeout=10,
    )


@pytest.mark.postgres
def test_a_role_taken_away_on_one_replica_ends_the_stream_on_the_other(
    tmp_path: Path, pg_dsn: str
) -> None:
    schema = f"qtestbed_it_{uuid.uuid4().hex[:12]}"
    joiner = "&" if "?" in pg_dsn else "?"
    store = f"{pg_dsn}{joiner}schema={schema}"
    try:
        with LocalFacility(tmp_path / "facility", store=store) as fac:
            fac.start_broker()
            _across_replicas(fac)
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _across_replicas(fac: LocalFacility) -> None:
    second = EmbeddedBroker(fac.settings())
    address = second.start().grpc
    sam_b = fac.client("sam", broker=address)
    try:
        stream = _follow_audit(sam_b)
        assert next(stream).seq >= 1  # open on the second replica
        _demote(fac.client("olivia"), "sam")  # through the first
        assert _drain(stream).code() is grpc.StatusCode.PERMISSION_DENIED
    finally:
        sam_b.close()
        second.stop()
