"""A broker process restarted on a long queue (three projects, mixed priorities and shot
counts) answers with exact positions, and a real driver then runs the jobs in exactly that
order: the queue the broker rebuilds from the store is the order it shows and follows."""

from __future__ import annotations

import random
import sqlite3
from contextlib import closing
from pathlib import Path

from qtestbed.cli.demo import ghz_qasm2
from qtestbed.client import Client, submit_request
from qtestbed.testing import UNLIMITED_ADMISSION, LocalFacility, eventually
from qtestbed.v1 import jobs_pb2
from tests.integration.support import db_path

PROJECT_OF = {"alice": "open-science", "bob": "quantum-sensing", "olivia": "facility-ops"}
PRIORITIES = (jobs_pb2.JOB_PRIORITY_LOW, jobs_pb2.JOB_PRIORITY_NORMAL, jobs_pb2.JOB_PRIORITY_HIGH)
PER_OWNER = 100  # one SubmitJobs batch each: 300 queued jobs in all


def queue_mixed(clients: dict[str, Client], rng: random.Random) -> dict[str, str]:
    """PER_OWNER jobs per principal (random priorities and shots); job id -> owner."""
    owner_of: dict[str, str] = {}
    payload = ghz_qasm2(2)
    for name, client in clients.items():
        batch = [
            submit_request(
                payload,
                device_id="sim-open",
                shots=rng.choice((10, 20, 40)),
                project=PROJECT_OF[name],
                priority=rng.choice(PRIORITIES),
            )
            for _ in range(PER_OWNER)
        ]
        owner_of.update((reply.job.job_id, name) for reply in client.submit_many(batch))
    return owner_of


def run_order(facility: LocalFacility) -> list[tuple[str, int]]:
    """(job id, attempts) of every completed job, in the order the broker dispatched them."""
    with closing(sqlite3.connect(db_path(facility))) as conn:
        rows = conn.execute(
            "SELECT job_id, attempts FROM jobs WHERE state = 'COMPLETED' ORDER BY dispatched_at"
        ).fetchall()
    return [(str(job_id), int(attempts)) for job_id, attempts in rows]


def test_a_restarted_broker_runs_a_long_queue_in_the_order_its_positions_show(
    tmp_path: Path,
) -> None:
    with LocalFacility(tmp_path / "f", limits=UNLIMITED_ADMISSION) as facility:
        facility.start_broker_process()
        owner_of = queue_mixed(
            {name: facility.client(name) for name in PROJECT_OF}, random.Random(15)
        )
        facility.stop()  # every client closes with it
        facility.start_broker_process()
        clients = {name: facility.client(name) for name in PROJECT_OF}
        shown = {
            job_id: clients[owner].get_job(job_id).queue_position
            for job_id, owner in owner_of.items()
        }
        assert sorted(shown.values()) == list(range(1, len(owner_of) + 1))
        facility.start_driver("sim-open")
        ran = eventually(
            lambda: r if len(r := run_order(facility)) == len(owner_of) else None,
            timeout=240,
            what=f"all {len(owner_of)} jobs to complete",
        )
    assert {attempts for _, attempts in ran} == {1}  # none was requeued on the way
    assert [job_id for job_id, _ in ran] == sorted(shown, key=shown.__getitem__)
