"""Admission control on a real broker process, over real gRPC with mutual TLS: alice past her
token bucket is refused RESOURCE_EXHAUSTED with a google.rpc.RetryInfo a standard gRPC client
reads, while bob is admitted; after the delay she was given, alice is admitted again. The
refusals are counted by reason and audited in aggregate."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from qtestbed.cli.demo import ghz_qasm2
from qtestbed.client import QtestbedError, submit_request
from qtestbed.qiskit.connection import Connection
from qtestbed.testing import LocalFacility, eventually
from qtestbed.v1 import jobs_pb2_grpc
from tests.integration.support import AuditRow, audit_entries, db_path, metric_value, scrape

# A small burst that refills slowly: alice meets her limit in a few calls on any machine.
ADMISSION = (
    "[admission]\nprincipal_burst = 100\nprincipal_jobs_per_second = 1.0\n"
    "refusal_audit_seconds = 1.0\n\n"
)
ATTEMPTS = 50  # a bounded loop: alice's bucket (100, 1 per second) is empty well before


@pytest.fixture
def facility(tmp_path: Path) -> Iterator[LocalFacility]:
    with LocalFacility(tmp_path / "facility") as fac:
        toml = fac.root / "broker.toml"
        text = toml.read_text()
        head, _, rest = text.partition("[admission]")
        _, _, tail = rest.partition("[timing]")
        assert tail, "broker.toml has an [admission] section before [timing]"
        toml.write_text(f"{head}{ADMISSION}[timing]{tail}")
        fac.start_broker_process()
        yield fac


def _retry_delay(error: grpc.RpcError) -> float:
    """The RetryInfo delay, read the way any gRPC client reads status details."""
    status = rpc_status.from_call(error)
    assert status is not None, "no grpc-status-details-bin on the refusal"
    for detail in status.details:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return float(info.retry_delay.ToNanoseconds()) / 1e9
    raise AssertionError(f"no RetryInfo among {status.details}")


def test_a_principal_past_its_bucket_is_told_when_to_retry_while_another_is_admitted(
    facility: LocalFacility,
) -> None:
    alice, bob = facility.client("alice"), facility.client("bob")
    sweep = [submit_request(ghz_qasm2(2), device_id="sim-open", shots=10) for _ in range(100)]
    assert len(alice.submit_many(sweep)) == 100  # a full sweep: her whole burst
    stub = jobs_pb2_grpc.JobServiceStub(alice.channel)  # a plain generated stub
    one = submit_request(ghz_qasm2(2), device_id="sim-open", shots=10)
    refusal: grpc.RpcError | None = None
    for _ in range(ATTEMPTS):
        try:
            stub.SubmitJob(one, timeout=30)
        except grpc.RpcError as exc:
            refusal = exc
            break
    assert refusal is not None, f"alice was admitted {ATTEMPTS} times past her bucket"
    assert refusal.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "submission rate limit for principal 'alice'" in refusal.details()
    delay = _retry_delay(refusal)
    assert 0 < delay <= 1.0  # one job at one per second

    # Bob's bucket is his own.
    assert bob.submit(ghz_qasm2(2), device_id="sim-open", shots=10).created

    # Waiting exactly the delay given is enough.
    time.sleep(delay)
    assert alice.submit(ghz_qasm2(2), device_id="sim-open", shots=10).created

    # The project's client names the delay in its error (the CLI prints that error).
    surfaced: QtestbedError | None = None
    for _ in range(ATTEMPTS):
        try:
            alice.submit(ghz_qasm2(2), device_id="sim-open", shots=10)
        except QtestbedError as exc:
            surfaced = exc
            break
    assert surfaced is not None
    assert surfaced.code == "RESOURCE_EXHAUSTED"
    assert surfaced.rule_id == "admission.principal_rate"
    assert surfaced.retry_after_seconds is not None
    assert 0 < surfaced.retry_after_seconds <= 1.0
    assert "retry after" in str(surfaced)

    refused = metric_value(
        scrape(facility), "qtestbed_admission_refusals_total", reason="principal_rate"
    )
    assert refused == 2

    def both_audited() -> list[AuditRow] | None:
        # One entry per window: on a slow machine the two refusals may fall in two windows.
        found = audit_entries(facility, kind="admission.refused")
        return found if sum(int(e.detail["count"]) for e in found) >= 2 else None

    entries = eventually(both_audited, what="the aggregated admission.refused audit entries")
    assert {(e.subject, e.detail["reason"]) for e in entries} == {("alice", "principal_rate")}
    assert sum(int(e.detail["count"]) for e in entries) == 2


def test_the_qiskit_connection_waits_out_the_delay_the_broker_gives(
    facility: LocalFacility,
) -> None:
    """A batch refused past the bucket is sent again, under the same idempotency keys, once the
    broker's RetryInfo delay has passed: queued once, with no error for the researcher."""
    alice = facility.client("alice")
    sweep = [submit_request(ghz_qasm2(2), device_id="sim-open", shots=10) for _ in range(100)]
    assert len(alice.submit_many(sweep)) == 100  # her whole burst
    batch = [
        submit_request(ghz_qasm2(2), device_id="sim-open", shots=10, idempotency_key=f"k{n}")
        for n in range(3)
    ]
    jobs = Connection(alice).submit_batch(batch)
    assert len({job.job_id for job in jobs}) == 3
    refused = metric_value(
        scrape(facility), "qtestbed_admission_refusals_total", reason="principal_rate"
    )
    assert refused == 1  # refused once, then sent again after the delay it was given
    with closing(sqlite3.connect(db_path(facility))) as db:
        [(queued,)] = db.execute("SELECT COUNT(*) FROM jobs WHERE owner = 'alice'").fetchall()
    assert queued == 103  # each circuit of the batch once


def test_a_device_at_its_queue_bound_refuses_the_project_past_its_share_and_no_one_else(
    tmp_path: Path,
) -> None:
    """No driver runs, so every job stays queued. sim-open at its bound of 100 (alice's project
    and bob's 50 each) refuses alice's next with a retry delay; olivia's project, with none
    queued there, still queues; sim-restricted's queue is its own."""
    admission = {"max_queued_per_device": 100, "refusal_audit_seconds": 1.0}
    with LocalFacility(tmp_path / "facility", limits={"admission": admission}) as facility:
        facility.start_broker_process()
        alice, bob = facility.client("alice"), facility.client("bob")
        for client in (alice, bob):
            half = [
                submit_request(ghz_qasm2(2), device_id="sim-open", shots=10, idempotency_key=f"{n}")
                for n in range(50)
            ]
            assert sum(r.created for r in client.submit_many(half)) == 50
        stub = jobs_pb2_grpc.JobServiceStub(alice.channel)
        # A retry whose answer was lost gets its job back at the bound; it is not refused.
        retry = stub.SubmitJob(half[0], timeout=30)
        assert not retry.created
        assert retry.job.owner == "alice"  # her key "0", her job
        with pytest.raises(grpc.RpcError) as info:
            stub.SubmitJob(submit_request(ghz_qasm2(2), device_id="sim-open", shots=10), timeout=30)
        assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "device 'sim-open' has 100 jobs queued" in info.value.details()
        assert "project 'open-science' has 50 of them" in info.value.details()
        assert _retry_delay(info.value) > 0
        # Naming bob's project instead tells alice nothing of it: clearance refuses, as ever.
        theirs = submit_request(
            ghz_qasm2(2), device_id="sim-open", shots=10, project="quantum-sensing"
        )
        with pytest.raises(grpc.RpcError) as info:
            stub.SubmitJob(theirs, timeout=30)
        assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "of them" not in info.value.details()
        assert "share" not in info.value.details()
        olivia = facility.client("olivia")  # facility-ops: nothing queued there yet
        assert olivia.submit(ghz_qasm2(2), device_id="sim-open", shots=10).created
        assert bob.submit(ghz_qasm2(2), device_id="sim-restricted", shots=10).created
        assert (
            metric_value(
                scrape(facility), "qtestbed_admission_refusals_total", reason="device_backlog"
            )
            == 1
        )
        [entry] = eventually(
            lambda: audit_entries(facility, kind="admission.refused") or None,
            what="the aggregated admission.refused audit entry",
        )
        assert (entry.subject, entry.detail["reason"], entry.detail["count"]) == (
            "alice",
            "device_backlog",
            1,
        )
