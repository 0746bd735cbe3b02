"""Sessions against a real broker and driver: back-to-back execution, idle timeout, maximum
length, operator close, one session per device, and who may see or use a session."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from qtestbed.cli.demo import ghz_qasm2
from qtestbed.client import QtestbedError
from qtestbed.testing import LocalFacility, eventually
from qtestbed.v1 import jobs_pb2
from tests.integration.support import audit_entries, db_path, wait_state


def _dispatch_order(facility: LocalFacility) -> list[str]:
    with closing(sqlite3.connect(db_path(facility))) as conn:
        rows = conn.execute(
            "SELECT job_id FROM jobs WHERE dispatched_at IS NOT NULL ORDER BY dispatched_at"
        ).fetchall()
    return [str(r[0]) for r in rows]


def _closed(client: object, session_id: str) -> jobs_pb2.Session | None:
    found: jobs_pb2.Session = client.session(session_id)  # type: ignore[attr-defined]
    return found if found.state == jobs_pb2.SESSION_STATE_CLOSED else None


def test_a_sessions_jobs_run_back_to_back_and_it_closes_when_idle(tmp_path: Path) -> None:
    with LocalFacility(tmp_path / "f", scheduling={"session_idle_seconds": 1.5}) as facility:
        facility.start_broker()
        alice, bob = facility.client("alice"), facility.client("bob")
        waiting = [bob.submit(ghz_qasm2(2), device_id="sim-open", shots=10).job for _ in range(3)]
        session = alice.open_session("sim-open")
        assert session.state == jobs_pb2.SESSION_STATE_OPEN
        assert session.idle_timeout_seconds == 1.5
        held = bob.get_job(waiting[0].job_id)
        assert "held by a session" in held.waiting_for
        facility.start_driver("sim-open", extra_config="min_execution_seconds = 0.2")
        ours = []
        for _ in range(3):  # an iterative algorithm: each step after the previous result
            job = alice.submit(ghz_qasm2(2), shots=10, session_id=session.session_id).job
            assert job.session_id == session.session_id
            assert job.device_id == "sim-open"
            wait_state(alice, job.job_id, "COMPLETED")
            ours.append(job.job_id)
        # Bob's jobs were queued first, yet none ran while the session was working.
        assert _dispatch_order(facility)[:3] == ours
        closed = eventually(lambda: _closed(alice, session.session_id), what="the idle close")
        assert closed.closed_reason == "idle for longer than its timeout"
        assert closed.jobs == 3
        for job in waiting:
            wait_state(bob, job.job_id, "COMPLETED")
        with pytest.raises(QtestbedError) as late:
            alice.submit(ghz_qasm2(2), shots=10, session_id=session.session_id)
        assert late.value.code == "NOT_FOUND"
        kinds = [e.kind for e in audit_entries(facility) if e.subject == session.session_id]
        assert kinds == ["session.opened", "session.closed"]


def test_session_limits_and_who_may_close_or_see_it(tmp_path: Path) -> None:
    limits = {"session_max_seconds": 2.0, "session_idle_seconds": 60.0}
    with LocalFacility(tmp_path / "f", scheduling=limits) as facility:
        facility.start_broker()
        alice, bob, olivia = (facility.client(n) for n in ("alice", "bob", "olivia"))
        # Asking for more than the facility allows gets the facility's maximum.
        session = alice.open_session("sim-open", max_seconds=3600)
        length = (session.closes_at.ToNanoseconds() - session.opened_at.ToNanoseconds()) / 1e9
        assert length == pytest.approx(2.0)
        # One session per device.
        with pytest.raises(QtestbedError) as busy:
            bob.open_session("sim-open")
        assert busy.value.code == "FAILED_PRECONDITION"
        assert "held by another session" in busy.value.message
        # Nobody else can use, see or close it; operators see and close every session.
        with pytest.raises(QtestbedError) as foreign:
            bob.submit(ghz_qasm2(2), shots=10, session_id=session.session_id)
        assert foreign.value.code == "NOT_FOUND"
        with pytest.raises(QtestbedError) as hidden:
            bob.session(session.session_id)
        assert hidden.value.code == "NOT_FOUND"
        assert bob.sessions() == []
        assert [s.session_id for s in olivia.sessions()] == [session.session_id]
        expired = eventually(
            lambda: _closed(alice, session.session_id), what="the maximum-length close"
        )
        assert expired.closed_reason == "reached its maximum length"

        second = alice.open_session("sim-open")
        closed = olivia.close_session(second.session_id, "maintenance at 14:00")
        assert closed.state == jobs_pb2.SESSION_STATE_CLOSED
        assert closed.closed_reason == "maintenance at 14:00"
        reasons = [e.detail["reason"] for e in audit_entries(facility, kind="session.closed")]
        assert reasons == ["reached its maximum length", "maintenance at 14:00"]
        # Sessions follow clearance: alice cannot open one on a device she may not see.
        with pytest.raises(QtestbedError) as unseen:
            alice.open_session("sim-restricted")
        assert unseen.value.code == "NOT_FOUND"
        listed = alice.sessions(include_closed=True)
        assert [s.session_id for s in listed] == [session.session_id, second.session_id]
