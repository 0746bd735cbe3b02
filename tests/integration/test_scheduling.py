"""Scheduling against a real broker and driver: fair share between weighted projects, priority
classes without starvation, exact queue positions and pushed position changes, ETAs, device
selection by constraints, and the attestation a job ran under."""

from __future__ import annotations

import sqlite3
import statistics
import threading
import time
from contextlib import closing
from pathlib import Path

import pytest

from qtestbed.cli.demo import ghz_qasm2
from qtestbed.client import Client, QtestbedError
from qtestbed.testing import LocalFacility, eventually
from qtestbed.v1 import access_pb2, jobs_pb2
from tests.integration.support import db_path, state_name, wait_state, with_calls_table

SLOW = "min_execution_seconds = 0.15"
WEIGHTS = {"open-science": 1, "quantum-sensing": 1, "facility-ops": 2}
PROJECT_OF = {"alice": "open-science", "bob": "quantum-sensing", "olivia": "facility-ops"}


def _set_weights(olivia: Client, weights: dict[str, int]) -> None:
    listed = olivia.call(olivia.access.ListProjects, access_pb2.ListProjectsRequest())
    for record in listed.projects:
        if record.project.name in weights:
            record.project.weight = weights[record.project.name]
            olivia.call(
                olivia.access.PutProject,
                access_pb2.PutProjectRequest(
                    project=record.project, expected_version=record.meta.version
                ),
            )


def _runs(facility: LocalFacility) -> list[tuple[str, str, float, float, int]]:
    """(job id, project, dispatched_at, finished_at, priority) of finished jobs, in run order."""
    with closing(sqlite3.connect(db_path(facility))) as conn:
        rows = conn.execute(
            "SELECT job_id, project, dispatched_at, finished_at, priority FROM jobs"
            " WHERE state = 'COMPLETED' ORDER BY dispatched_at"
        ).fetchall()
    return [(str(a), str(b), float(c), float(d), int(e)) for a, b, c, d, e in rows]


def test_fair_share_follows_project_weights_under_contention(facility: LocalFacility) -> None:
    facility.start_broker()
    clients = {name: facility.client(name) for name in PROJECT_OF}
    _set_weights(clients["olivia"], WEIGHTS)
    for _ in range(24):  # every project keeps a backlog for the whole measurement
        for name, client in clients.items():
            client.submit(ghz_qasm2(2), device_id="sim-open", shots=10, project=PROJECT_OF[name])
    facility.start_driver("sim-open", extra_config=SLOW)
    runs = eventually(
        lambda: r if len(r := _runs(facility)) >= 40 else None,
        timeout=120,
        what="40 jobs to run",
    )[:40]
    time_by_project = {p: 0.0 for p in WEIGHTS}
    for _, project, dispatched, finished, _ in runs:
        time_by_project[project] += finished - dispatched
    total = sum(time_by_project.values())
    shares = {p: t / total for p, t in time_by_project.items()}
    print("\ndevice-time shares over 40 jobs:", {p: round(v, 3) for p, v in shares.items()})
    for project, weight in WEIGHTS.items():
        assert abs(shares[project] - weight / sum(WEIGHTS.values())) <= 0.05, (project, shares)


def test_a_low_priority_job_is_overtaken_only_for_a_while(tmp_path: Path) -> None:
    aging = 1.0
    with LocalFacility(tmp_path / "f", scheduling={"aging_seconds": aging}) as facility:
        facility.start_broker()
        alice = facility.client("alice")
        low = alice.submit(
            ghz_qasm2(2), device_id="sim-open", shots=10, priority=jobs_pb2.JOB_PRIORITY_LOW
        ).job
        high = []
        for _ in range(8):
            time.sleep(0.5)
            high.append(
                alice.submit(
                    ghz_qasm2(2),
                    device_id="sim-open",
                    shots=10,
                    priority=jobs_pb2.JOB_PRIORITY_HIGH,
                ).job
            )
        facility.start_driver("sim-open")
        for job in [low, *high]:
            wait_state(alice, job.job_id, "COMPLETED")
        order = [job_id for job_id, *_ in _runs(facility)]
        # A high job goes first only if submitted less than 2 classes x aging after it.
        low_at = low.created_at.ToNanoseconds() / 1e9
        ahead = [j.job_id for j in high if j.created_at.ToNanoseconds() / 1e9 - 2 * aging < low_at]
        assert 0 < len(ahead) < len(high)
        assert order.index(low.job_id) == len(ahead)
        assert set(order[: len(ahead)]) == set(ahead)


def _snapshot(client: Client, jobs: list[jobs_pb2.Job]) -> dict[str, jobs_pb2.Job]:
    return {j.job_id: client.get_job(j.job_id) for j in jobs}


def test_queue_positions_match_the_true_order_at_every_step(facility: LocalFacility) -> None:
    # Unpaced WatchJob ([calls] position_update_seconds = 0): every position is pushed.
    with_calls_table(facility, "position_update_seconds = 0")
    facility.start_broker()
    clients = {name: facility.client(name) for name in PROJECT_OF}
    _set_weights(clients["olivia"], WEIGHTS)
    submitted: list[tuple[Client, jobs_pb2.Job]] = []
    priorities = [
        jobs_pb2.JOB_PRIORITY_NORMAL,
        jobs_pb2.JOB_PRIORITY_HIGH,
        jobs_pb2.JOB_PRIORITY_LOW,
    ]
    for n in range(4):
        for client in clients.values():
            job = client.submit(
                ghz_qasm2(2), device_id="sim-open", shots=10, priority=priorities[n % 3]
            ).job
            submitted.append((client, job))
    operator = clients["olivia"]
    jobs = [job for _, job in submitted]
    first = _snapshot(operator, jobs)
    assert sorted(j.queue_position for j in first.values()) == list(range(1, len(jobs) + 1))
    assert all(j.device_queue_depth == len(jobs) for j in first.values())
    last = max(first.values(), key=lambda j: j.queue_position)

    pushed: list[int] = []
    owner = next(c for c, j in submitted if j.job_id == last.job_id)

    def watch() -> None:
        for update in owner.watch(last.job_id, timeout=120):
            queued = update.state == jobs_pb2.JOB_STATE_QUEUED
            if queued and (not pushed or pushed[-1] != update.queue_position):
                pushed.append(update.queue_position)

    watcher = threading.Thread(target=watch)
    watcher.start()
    eventually(lambda: pushed, what="the watch stream to start")
    facility.start_driver("sim-open", extra_config="min_execution_seconds = 0.5")

    snapshots: list[dict[str, jobs_pb2.Job]] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        running = [j for j in operator.list_jobs() if j.state == jobs_pb2.JOB_STATE_RUNNING]
        if len(running) == 1:
            view = _snapshot(operator, jobs)
            if operator.get_job(running[0].job_id).state == jobs_pb2.JOB_STATE_RUNNING:
                snapshots.append(view)  # nothing was dispatched meanwhile
        if all(state_name(operator.get_job(j.job_id)) == "COMPLETED" for j in jobs):
            break
        time.sleep(0.1)
    watcher.join(timeout=60)

    order = [job_id for job_id, *_ in _runs(facility)]
    assert order == sorted(first, key=lambda job_id: first[job_id].queue_position)
    assert len(snapshots) >= 5
    eta_errors: list[float] = []
    learned: list[float] = []  # predictions made once the device's pace was measured
    dispatched = {job_id: at for job_id, _, at, _, _ in _runs(facility)}
    for view in snapshots:
        waiting = [job_id for job_id in order if view[job_id].state == jobs_pb2.JOB_STATE_QUEUED]
        for place, job_id in enumerate(waiting, start=1):
            assert view[job_id].queue_position == place
            eta = view[job_id].eta.ToNanoseconds() / 1e9
            eta_errors.append(eta - dispatched[job_id])
            if any(v.state == jobs_pb2.JOB_STATE_COMPLETED for v in view.values()):
                learned.append(eta - dispatched[job_id])
    # WatchJob pushed every position the job passed through, down to the head of the queue.
    assert pushed == list(range(last.queue_position, 0, -1))
    median = statistics.median(eta_errors)
    print(
        f"\nETA error over {len(eta_errors)} predictions: median {median:+.3f} s,"
        f" median |error| {statistics.median(abs(e) for e in eta_errors):.3f} s,"
        f" max |error| {max(abs(e) for e in eta_errors):.3f} s; once a job had completed:"
        f" {len(learned)} predictions, max |error| {max(abs(e) for e in learned):.3f} s"
    )


def test_a_job_records_the_attestation_and_calibration_it_ran_under(
    running: LocalFacility,
) -> None:
    alice = running.client("alice")
    job = alice.submit(ghz_qasm2(3), device_id="sim-open", shots=100).job
    assert job.evidence_digest == ""
    done = wait_state(alice, job.job_id, "COMPLETED")
    result = alice.result(job.job_id)
    assert alice.verify_result(result, done) == []
    assert done.evidence_digest
    assert done.calibration_digest
    assert done.calibration_digest in alice.devices()[0].calibration_digest


def test_device_selection_by_constraints(facility: LocalFacility) -> None:
    facility.start_broker()
    facility.start_driver("sim-open")
    facility.start_driver("sim-restricted")
    alice, bob = facility.client("alice"), facility.client("bob")
    facility.wait_available(bob, "sim-restricted")
    facility.wait_available(bob, "sim-open")
    wide = jobs_pb2.DeviceSelector(min_qubits=6, basis_gates=["cx", "sx"])
    picked = bob.submit(ghz_qasm2(3), selector=wide, shots=10).job
    assert picked.device_id == "sim-restricted"
    assert state_name(wait_state(bob, picked.job_id, "COMPLETED")) == "COMPLETED"
    # Alice may not see the only 6-qubit device: no match, and no hint that it exists.
    with pytest.raises(QtestbedError) as refused:
        alice.submit(ghz_qasm2(3), selector=wide, shots=10)
    assert refused.value.code == "NOT_FOUND"
    assert "sim-restricted" not in refused.value.message
    small = alice.submit(ghz_qasm2(3), selector=jobs_pb2.DeviceSelector(min_qubits=3), shots=10)
    assert small.job.device_id == "sim-open"
    accurate = jobs_pb2.DeviceSelector(min_qubits=6, max_two_qubit_error=0.001)
    with pytest.raises(QtestbedError) as none:
        bob.submit(ghz_qasm2(3), selector=accurate, shots=10)
    assert none.value.code == "NOT_FOUND"
    assert "max_two_qubit_error=0.001" in none.value.message
    by_tier = bob.submit(
        ghz_qasm2(2), selector=jobs_pb2.DeviceSelector(tier="restricted"), shots=10
    )
    assert by_tier.job.device_id == "sim-restricted"
