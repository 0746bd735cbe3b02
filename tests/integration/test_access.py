"""The operator's access API against a real broker and drivers: principals, projects, quotas,
device operating states, maintenance windows and reservations, each enforced where it matters.
"""

from __future__ import annotations

import concurrent.futures
import time

import pytest

from qtestbed.cli.demo import ghz_qasm2
from qtestbed.client import Client, QtestbedError
from qtestbed.testing import LocalFacility
from qtestbed.v1 import access_pb2, jobs_pb2
from tests.integration.support import (
    audit_entries,
    metric_value,
    scrape,
    state_name,
    wait_broker_ticks,
    wait_state,
)


def _principal(olivia: Client, name: str) -> access_pb2.PrincipalRecord:
    record: access_pb2.PrincipalRecord = olivia.call(
        olivia.access.GetPrincipal, access_pb2.GetPrincipalRequest(name=name)
    )
    return record


def _put(olivia: Client, record: access_pb2.PrincipalRecord) -> access_pb2.PrincipalRecord:
    stored: access_pb2.PrincipalRecord = olivia.call(
        olivia.access.PutPrincipal,
        access_pb2.PutPrincipalRequest(
            principal=record.principal, expected_version=record.meta.version
        ),
    )
    return stored


def _set_quota(olivia: Client, name: str, *, jobs: int = 0, shots: int = 0) -> None:
    record = _principal(olivia, name)
    record.principal.quota.CopyFrom(access_pb2.Quota(max_active_jobs=jobs, max_shots_per_day=shots))
    _put(olivia, record)


def _state(
    olivia: Client, device: str, state: access_pb2.OperatingState.ValueType, reason: str = ""
) -> None:
    olivia.call(
        olivia.access.SetDeviceState,
        access_pb2.SetDeviceStateRequest(device_id=device, state=state, reason=reason),
    )


def _window(
    olivia: Client,
    device: str,
    kind: access_pb2.WindowKind.ValueType,
    start: float,
    end: float,
    project: str = "",
) -> access_pb2.DeviceOperations:
    request = access_pb2.AddDeviceWindowRequest(device_id=device, kind=kind, project=project)
    request.starts_at.FromNanoseconds(int(start * 1e9))
    request.ends_at.FromNanoseconds(int(end * 1e9))
    ops: access_pb2.DeviceOperations = olivia.call(olivia.access.AddDeviceWindow, request)
    return ops


def _refused(call: object, code: str) -> QtestbedError:
    with pytest.raises(QtestbedError) as caught:
        call()  # type: ignore[operator]
    assert caught.value.code == code, caught.value
    return caught.value


def _principal_quota(client: Client) -> jobs_pb2.QuotaUsage:
    return next(q for q in client.quota() if q.scope == "principal")


def test_quotas_refuse_with_resource_exhausted_and_show_what_remains(
    facility: LocalFacility,
) -> None:
    facility.start_broker()  # no driver: jobs stay queued, so they stay active
    olivia, alice = facility.client("olivia"), facility.client("alice")
    unlimited = _principal_quota(alice)
    assert unlimited.max_active_jobs == 0
    assert unlimited.remaining_active_jobs == 2**32 - 1
    _set_quota(olivia, "alice", jobs=2, shots=300)
    before = _principal_quota(alice)
    assert (before.remaining_active_jobs, before.remaining_shots) == (2, 300)

    first = alice.submit(ghz_qasm2(2), device_id="sim-open", shots=100).job
    alice.submit(ghz_qasm2(2), device_id="sim-open", shots=100)
    assert _principal_quota(alice).remaining_active_jobs == 0
    refused = _refused(
        lambda: alice.submit(ghz_qasm2(2), device_id="sim-open", shots=10), "RESOURCE_EXHAUSTED"
    )
    assert refused.rule_id == "quota.principal.active_jobs"
    assert "at most 2 active jobs" in refused.message
    assert "qtestbed quota" in refused.message

    # A job cancelled before it ran frees its slot and its shots.
    alice.cancel(first.job_id)
    left = _principal_quota(alice)
    assert (left.active_jobs, left.shots_last_day, left.remaining_shots) == (1, 100, 200)
    too_many = _refused(
        lambda: alice.submit(ghz_qasm2(2), device_id="sim-open", shots=201), "RESOURCE_EXHAUSTED"
    )
    assert too_many.rule_id == "quota.principal.shots_per_day"
    assert "200 shots remain" in too_many.message
    alice.submit(ghz_qasm2(2), device_id="sim-open", shots=200)  # exactly at the limit
    assert _principal_quota(alice).remaining_shots == 0

    # Project quotas apply to everyone in the project.
    projects = olivia.call(olivia.access.ListProjects, access_pb2.ListProjectsRequest())
    sensing = next(p for p in projects.projects if p.project.name == "quantum-sensing")
    sensing.project.quota.max_active_jobs = 1
    olivia.call(
        olivia.access.PutProject,
        access_pb2.PutProjectRequest(
            project=sensing.project, expected_version=sensing.meta.version
        ),
    )
    bob = facility.client("bob")
    bob.submit(ghz_qasm2(2), device_id="sim-open", shots=10)
    by_project = _refused(
        lambda: bob.submit(ghz_qasm2(2), device_id="sim-open", shots=10), "RESOURCE_EXHAUSTED"
    )
    assert by_project.rule_id == "quota.project.active_jobs"
    project = next(q for q in bob.quota() if q.scope == "project")
    assert (project.name, project.remaining_active_jobs) == ("quantum-sensing", 0)

    metrics = scrape(facility)
    assert (
        metric_value(
            metrics, "qtestbed_quota_rejections_total", scope="principal", limit="active_jobs"
        )
        == 1
    )
    assert (
        metric_value(
            metrics, "qtestbed_quota_rejections_total", scope="principal", limit="shots_per_day"
        )
        == 1
    )
    exceeded = audit_entries(facility, kind="quota.exceeded")
    assert [(e.detail["scope"], e.detail["limit"]) for e in exceeded] == [
        ("principal", "active_jobs"),
        ("principal", "shots_per_day"),
        ("project", "active_jobs"),
    ]


def test_a_quota_holds_under_concurrent_submissions(facility: LocalFacility) -> None:
    facility.start_broker()
    olivia = facility.client("olivia")
    _set_quota(olivia, "alice", jobs=3)
    clients = [facility.client("alice") for _ in range(8)]

    def submit(client: Client) -> str:
        try:
            client.submit(ghz_qasm2(2), device_id="sim-open", shots=10)
        except QtestbedError as exc:
            return exc.code
        return "OK"

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = sorted(pool.map(submit, clients))
    assert outcomes == ["OK"] * 3 + ["RESOURCE_EXHAUSTED"] * 5
    assert len(clients[0].list_jobs()) == 3


def test_device_states_hold_refuse_and_release_work(facility: LocalFacility) -> None:
    facility.start_broker()
    olivia, alice = facility.client("olivia"), facility.client("alice")
    queued = alice.submit(ghz_qasm2(3), device_id="sim-open", shots=50).job
    _state(olivia, "sim-open", access_pb2.OPERATING_STATE_MAINTENANCE, "replacing a cable")
    facility.start_driver("sim-open")
    facility.wait_available(olivia, "sim-open")
    # Attested and idle, but in maintenance: once the dispatcher has looked at sim-open's
    # queue, the queued job is still there and says why.
    wait_broker_ticks(facility, 3, device_id="sim-restricted")
    held = alice.get_job(queued.job_id)
    assert state_name(held) == "QUEUED"
    assert "maintenance" in held.waiting_for
    assert "replacing a cable" in held.waiting_for
    assert "job.dispatched" not in [e.kind for e in audit_entries(facility)]
    assert next(d for d in olivia.devices() if d.device_id == "sim-open").available
    denied = _refused(
        lambda: alice.submit(ghz_qasm2(2), device_id="sim-open", shots=10), "PERMISSION_DENIED"
    )
    assert denied.rule_id == "researcher-submit/state"
    assert "maintenance" in denied.message

    # Draining: what is queued runs, nothing new is accepted.
    _state(olivia, "sim-open", access_pb2.OPERATING_STATE_DRAINING)
    assert state_name(wait_state(alice, queued.job_id, "COMPLETED")) == "COMPLETED"
    _refused(
        lambda: alice.submit(ghz_qasm2(2), device_id="sim-open", shots=10), "PERMISSION_DENIED"
    )

    _state(olivia, "sim-open", access_pb2.OPERATING_STATE_ONLINE)
    again = alice.submit(ghz_qasm2(2), device_id="sim-open", shots=10).job
    assert state_name(wait_state(alice, again.job_id, "COMPLETED")) == "COMPLETED"
    changes = [e.detail["state"] for e in audit_entries(facility, kind="access.device.state")]
    assert changes == ["maintenance", "draining", "online"]


def test_a_maintenance_window_holds_the_queue_until_it_ends(facility: LocalFacility) -> None:
    facility.start_broker()
    olivia, alice = facility.client("olivia"), facility.client("alice")
    job = alice.submit(ghz_qasm2(3), device_id="sim-open", shots=50).job
    start = time.time()
    # A window far longer than the test: it ends when the operator removes it, not by the clock.
    ops = _window(olivia, "sim-open", access_pb2.WINDOW_KIND_MAINTENANCE, start - 1, start + 3600)
    assert ops.effective_state == access_pb2.OPERATING_STATE_MAINTENANCE
    assert ops.state == access_pb2.OPERATING_STATE_ONLINE
    facility.start_driver("sim-open")
    facility.wait_available(olivia, "sim-open")
    wait_broker_ticks(facility, 3, device_id="sim-restricted")  # the dispatcher has looked
    assert state_name(alice.get_job(job.job_id)) == "QUEUED"
    assert "maintenance window" in alice.get_job(job.job_id).waiting_for
    [window] = ops.windows
    ended = time.time()
    request = access_pb2.RemoveDeviceWindowRequest(device_id="sim-open", window_id=window.window_id)
    olivia.call(olivia.access.RemoveDeviceWindow, request)
    done = wait_state(alice, job.job_id, "COMPLETED")
    assert done.finished_at.ToNanoseconds() / 1e9 >= ended  # never inside the window


def test_a_reservation_runs_its_project_first_and_refuses_others(
    facility: LocalFacility,
) -> None:
    facility.start_broker()
    olivia, alice, bob = (facility.client(n) for n in ("olivia", "alice", "bob"))
    early = alice.submit(ghz_qasm2(3), device_id="sim-open", shots=50).job
    now = time.time()
    # A window far longer than the test: it ends when the operator removes it, not by the
    # clock, so a slow machine cannot see it end before bob's job has run.
    ops = _window(
        olivia,
        "sim-open",
        access_pb2.WINDOW_KIND_RESERVATION,
        now - 1,
        now + 3600,
        "quantum-sensing",
    )
    refused = _refused(
        lambda: alice.submit(ghz_qasm2(2), device_id="sim-open", shots=10), "PERMISSION_DENIED"
    )
    assert refused.rule_id == "researcher-submit/reservation"
    assert "reserved for project" in refused.message
    assert "quantum-sensing" in refused.message
    late = bob.submit(ghz_qasm2(2), device_id="sim-open", shots=10, project="quantum-sensing").job
    facility.start_driver("sim-open")
    # Bob's later job runs inside the window while Alice's earlier one waits for it to end.
    wait_state(bob, late.job_id, "COMPLETED")
    waiting = alice.get_job(early.job_id)
    assert state_name(waiting) == "QUEUED"
    assert "reserved for project quantum-sensing" in waiting.waiting_for
    [window] = ops.windows
    ended = time.time()
    request = access_pb2.RemoveDeviceWindowRequest(device_id="sim-open", window_id=window.window_id)
    olivia.call(olivia.access.RemoveDeviceWindow, request)
    done = wait_state(alice, early.job_id, "COMPLETED")
    assert done.finished_at.ToNanoseconds() / 1e9 >= ended  # never inside the reservation

    # Overlapping reservations and unknown projects are refused with what to do.
    later = time.time() + 60
    _window(
        olivia, "sim-open", access_pb2.WINDOW_KIND_RESERVATION, later, later + 60, "open-science"
    )
    overlap = _refused(
        lambda: _window(
            olivia,
            "sim-open",
            access_pb2.WINDOW_KIND_RESERVATION,
            later + 30,
            later + 90,
            "quantum-sensing",
        ),
        "FAILED_PRECONDITION",
    )
    assert "already reserved for project open-science" in overlap.message
    _refused(
        lambda: _window(
            olivia,
            "sim-open",
            access_pb2.WINDOW_KIND_RESERVATION,
            later + 100,
            later + 200,
            "no-such-project",
        ),
        "INVALID_ARGUMENT",
    )
    kinds = [e.kind for e in audit_entries(facility) if e.kind.startswith("access.device.")]
    assert kinds == [
        "access.device.reservation.added",
        "access.device.window.removed",
        "access.device.reservation.added",
    ]


def test_operators_manage_principals_with_versions_and_audit(facility: LocalFacility) -> None:
    facility.start_broker()
    olivia, alice = facility.client("olivia"), facility.client("alice")
    queued = alice.submit(ghz_qasm2(2), device_id="sim-open", shots=10).job
    record = _principal(olivia, "alice")
    assert record.meta.updated_by == "facility-file"
    assert record.meta.version == 1
    assert list(record.principal.projects) == ["open-science"]

    # Compare-and-set: a write based on a stale read is refused, not silently merged.
    record.principal.affiliation = "Example Institute"
    updated = _put(olivia, record)
    assert updated.meta.version == 2
    assert updated.meta.updated_by == "olivia"
    record.principal.affiliation = "someone else's edit"
    _refused(lambda: _put(olivia, record), "ABORTED")
    # Creating a name that exists is refused too: two operators cannot overwrite each other.
    record.meta.version = 0
    assert "already exists" in _refused(lambda: _put(olivia, record), "ABORTED").message

    bad = access_pb2.PrincipalRecord()
    bad.CopyFrom(updated)
    bad.principal.tier = "top-secret"
    assert "is not one of" in _refused(lambda: _put(olivia, bad), "INVALID_ARGUMENT").message
    bad.CopyFrom(updated)
    bad.principal.projects.append("no-such-project")
    assert "do not exist" in _refused(lambda: _put(olivia, bad), "INVALID_ARGUMENT").message

    # Removing a principal: their calls are refused at once, their queued job never runs.
    olivia.call(olivia.access.DeletePrincipal, access_pb2.DeletePrincipalRequest(name="alice"))
    _refused(lambda: alice.get_job(queued.job_id), "UNAUTHENTICATED")
    facility.start_driver("sim-open")
    olivia_view = wait_state(olivia, queued.job_id, "DENIED")
    assert olivia_view.rule_id == "principal.unknown"
    kinds = [e.kind for e in audit_entries(facility) if e.subject == "alice"]
    assert kinds[-2:] == ["access.principal.updated", "access.principal.removed"]
