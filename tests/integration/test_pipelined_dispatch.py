"""Pipelined dispatch with a real broker process and real driver processes holding 4 leases:
every job completes exactly once; a driver killed mid-pipeline gives back every lease it held,
started or not, and another driver completes them; a clearance ended while jobs wait in the
driver's pipeline denies those jobs, which the driver never runs (the one already running
finishes, as it would with one lease in flight)."""

from __future__ import annotations

import signal
import time

from qtestbed.cli.demo import ghz_qasm2
from qtestbed.client import Client
from qtestbed.testing import LocalFacility, eventually
from qtestbed.v1 import access_pb2
from tests.integration.support import audit_entries, state_name, wait_state

LEASES = 4
RULE = "researcher-dispatch/clearance"


def _pipelined(seconds: float) -> str:
    return f"max_leases = {LEASES}\nmin_execution_seconds = {seconds}"


def _submit(alice: Client, count: int) -> list[str]:
    return [
        alice.submit(ghz_qasm2(2), device_id="sim-open", shots=10).job.job_id for _ in range(count)
    ]


def _states(client: Client, ids: list[str]) -> list[str]:
    return [state_name(client.get_job(job_id)) for job_id in ids]


def _completions(facility: LocalFacility) -> list[str]:
    return [e.subject for e in audit_entries(facility, kind="job.completed")]


def _driver_logs(facility: LocalFacility) -> str:
    return "".join(p.read_text() for p in sorted(facility.root.glob("driver-sim-open-*.log")))


def _most_in_flight(facility: LocalFacility) -> int:
    """The most leases out at once, from the audit log's dispatches and their endings."""
    out, most = 0, 0
    for entry in audit_entries(facility):
        if entry.kind == "job.dispatched":
            out += 1
        elif entry.kind in ("job.completed", "job.requeued", "clearance.denied") and out:
            out -= 1
        most = max(most, out)
    return most


def test_every_job_completes_exactly_once_with_four_leases_in_flight(
    facility: LocalFacility,
) -> None:
    facility.start_broker_process()
    alice = facility.client("alice")
    ids = _submit(alice, 24)
    facility.start_driver("sim-open", extra_config=_pipelined(0.02))
    for job_id in ids:
        job = wait_state(alice, job_id, "COMPLETED")
        assert job.attempts == 1
    completions = _completions(facility)
    assert sorted(completions) == sorted(ids)  # each once
    assert _most_in_flight(facility) == LEASES


def test_a_driver_killed_mid_pipeline_gives_back_every_lease_it_held(
    facility: LocalFacility,
) -> None:
    facility.start_broker_process()
    alice = facility.client("alice")
    ids = _submit(alice, 8)
    slow = facility.start_driver("sim-open", extra_config=_pipelined(2.0))
    leased = ids[:LEASES]
    eventually(
        lambda: _states(alice, leased) == ["RUNNING"] + ["DISPATCHED"] * (LEASES - 1),
        timeout=60,
        what="the driver to hold 4 leases, the first running",
    )
    slow.send_signal(signal.SIGKILL)
    slow.wait()
    eventually(
        lambda: _states(alice, leased) == ["QUEUED"] * LEASES,
        timeout=30,
        what="every lease the killed driver held to go back to the queue",
    )
    requeued = audit_entries(facility, kind="job.requeued")
    assert sorted(e.subject for e in requeued) == sorted(leased)
    assert all("driver lost" in e.detail["cause"] for e in requeued)
    facility.start_driver("sim-open", extra_config=_pipelined(0.02))
    for job_id in ids:
        job = wait_state(alice, job_id, "COMPLETED")
        assert job.attempts == (2 if job_id in leased else 1)
    assert sorted(_completions(facility)) == sorted(ids)


def _end_clearance(facility: LocalFacility, name: str) -> None:
    olivia = facility.client("olivia")
    record = olivia.call(olivia.access.GetPrincipal, access_pb2.GetPrincipalRequest(name=name))
    record.principal.clearance_expires_at.FromSeconds(1_577_836_800)  # 2020-01-01
    request = access_pb2.PutPrincipalRequest(
        principal=record.principal, expected_version=record.meta.version
    )
    olivia.call(olivia.access.PutPrincipal, request)


def test_a_clearance_ended_while_jobs_wait_in_the_pipeline_denies_them_unrun(
    facility: LocalFacility,
) -> None:
    facility.start_broker_process()
    alice = facility.client("alice")
    ids = _submit(alice, LEASES)
    facility.start_driver("sim-open", extra_config=_pipelined(3.0))
    eventually(
        lambda: _states(alice, ids) == ["RUNNING"] + ["DISPATCHED"] * (LEASES - 1),
        timeout=60,
        what="the driver to hold 4 leases, the first running",
    )
    _end_clearance(facility, "alice")
    running, *waiting = ids
    for job_id in waiting:
        denied = wait_state(alice, job_id, "DENIED", "COMPLETED", timeout=30)
        assert (state_name(denied), denied.rule_id) == ("DENIED", RULE)
    assert state_name(wait_state(alice, running, "COMPLETED", "DENIED")) == "COMPLETED"
    denials = audit_entries(facility, kind="clearance.denied")
    assert sorted(e.subject for e in denials) == sorted(waiting)
    assert {e.detail["stage"] for e in denials} == {"pipeline"}
    time.sleep(0.5)  # the driver has answered the withdrawals by now; nothing else ran
    logs = _driver_logs(facility)
    assert "running lease" in logs
    for job_id in waiting:
        lease = _lease_of(facility, job_id)
        assert f"lease {lease} received for job {job_id}" in logs  # granted, then...
        assert f"lease {lease} dropped before it started" in logs  # ...withdrawn, never run
        assert f"running lease {lease}" not in logs
    assert f"for job {running}" in logs


def _lease_of(facility: LocalFacility, job_id: str) -> str:
    [dispatched] = [
        e for e in audit_entries(facility, kind="job.dispatched") if e.subject == job_id
    ]
    return str(dispatched.detail["lease"])
