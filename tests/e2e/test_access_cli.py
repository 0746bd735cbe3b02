"""The access commands as operators and researchers run them: principal, project, device
state|maintenance|reserve|unschedule|schedule and quota, against one real broker process."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qtestbed.cli.demo import ghz_qasm2
from qtestbed.testing import LocalFacility
from tests.e2e.console import qtestbed

USERS = ("alice", "bob", "olivia", "sam")


def ok(done: subprocess.CompletedProcess[str]) -> Any:
    """The JSON a successful --json command printed."""
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def iso(delta: dt.timedelta) -> str:
    return (dt.datetime.now(dt.UTC) + delta).replace(microsecond=0).isoformat()


@pytest.fixture(scope="module")
def profiles(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """One broker for the module and no driver, so submitted jobs stay queued."""
    root = tmp_path_factory.mktemp("access") / "fac"
    init = qtestbed("init", str(root))
    assert init.returncode == 0, init.stderr
    with LocalFacility(root) as facility:
        addresses = facility.start_broker_process()
        paths = {}
        for name in USERS:
            path = root / "users" / f"{name}.toml"
            path.write_text(path.read_text().replace("127.0.0.1:50051", addresses.grpc))
            paths[name] = path
        yield paths


def test_operator_creates_a_project_and_a_principal(profiles: dict[str, Path]) -> None:
    olivia = profiles["olivia"]
    created = ok(
        qtestbed(
            "project",
            "set",
            "lab-x",
            "--description",
            "Lab X sensing",
            "--weight",
            "2",
            "--max-active-jobs",
            "3",
            "--max-shots-per-day",
            "5000",
            "--json",
            profile=olivia,
        )
    )
    assert created["project"]["quota"] == {"max_active_jobs": 3, "max_shots_per_day": 5000}
    assert created["meta"]["version"] == 1
    # Fields not given are kept, and the version moves on.
    updated = ok(qtestbed("project", "set", "lab-x", "--weight", "3", "--json", profile=olivia))
    assert updated["project"]["description"] == "Lab X sensing"
    assert updated["project"]["weight"] == 3
    assert updated["project"]["quota"]["max_active_jobs"] == 3
    assert (updated["meta"]["version"], updated["meta"]["updated_by"]) == (2, "olivia")
    listed = qtestbed("project", "list", profile=olivia)
    assert listed.returncode == 0, listed.stderr
    line = next(x for x in listed.stdout.splitlines() if x.startswith("lab-x"))
    assert line.split()[:5] == ["lab-x", "3", "3", "5000", "2"]

    missing = qtestbed("principal", "set", "carol", "--tier", "open", profile=olivia)
    assert missing.returncode == 2
    assert "does not exist; to create it give --tier and at least one --role" in missing.stderr
    clearance, course = iso(dt.timedelta(days=365)), iso(dt.timedelta(days=180))
    done = qtestbed(
        "principal",
        "set",
        "carol",
        "--tier",
        "open",  # created at the lowest tier: a higher one comes through 'access request'
        "--role",
        "researcher",
        "--add-project",
        "lab-x",
        "--clearance-until",
        clearance,
        "--training",
        f"dual-use-awareness={course}",
        "--training",
        "export-basics=2020-01-01T00:00:00Z",
        "--affiliation",
        "Example Institute",
        "--nationality",
        "DE",
        "--jurisdiction",
        "EU",
        "--max-shots-per-day",
        "1000",
        profile=olivia,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("created principal carol")

    shown = ok(qtestbed("principal", "show", "carol", "--json", profile=olivia))
    p = shown["principal"]
    assert (p["tier"], p["roles"], p["projects"]) == ("open", ["researcher"], ["lab-x"])
    assert p["clearance_expires_at"] == clearance.replace("+00:00", "Z")
    assert set(p["training"]) == {"dual-use-awareness", "export-basics"}
    assert (p.get("licences", []), p["jurisdictions"]) == ([], ["EU"])
    assert p["quota"] == {"max_active_jobs": 0, "max_shots_per_day": 1000}
    assert (shown["meta"]["version"], shown["meta"]["updated_by"]) == (1, "olivia")
    text = qtestbed("principal", "show", "carol", profile=olivia).stdout
    assert "affiliation:   Example Institute" in text
    assert f"dual-use-awareness  until {course}" in text
    assert "export-basics  until 2020-01-01T00:00:00+00:00 (EXPIRED)" in text
    assert "quota:         max active jobs no limit, max shots per day 1000" in text
    assert "record:        version 1, updated by olivia at " in text

    changed = ok(
        qtestbed(
            "principal",
            "set",
            "carol",
            "--drop-training",
            "export-basics",
            "--clearance-until",
            "never",
            "--remove-project",
            "lab-x",
            "--add-project",
            "open-science",
            "--json",
            profile=olivia,
        )
    )
    p = changed["principal"]
    assert "clearance_expires_at" not in p
    assert (list(p["training"]), p["projects"]) == (["dual-use-awareness"], ["open-science"])
    assert p["affiliation"] == "Example Institute"  # untouched fields are kept
    assert changed["meta"]["version"] == 2
    absent = qtestbed("principal", "set", "carol", "--remove-licence", "ITAR", profile=olivia)
    assert absent.returncode == 2
    assert "carol has no licence 'ITAR' to remove" in absent.stderr

    listing = qtestbed("principal", "list", profile=olivia)
    assert listing.returncode == 0, listing.stderr
    row = next(x for x in listing.stdout.splitlines() if x.startswith("carol"))
    assert row.split() == [
        "carol",
        "open",
        "researcher",
        "never",
        "expires",
        "open-science",
        "2",
    ]
    removed = qtestbed("principal", "remove", "carol", profile=olivia)
    assert removed.returncode == 0, removed.stderr
    gone = qtestbed("principal", "show", "carol", profile=olivia)
    assert gone.returncode == 1
    assert "NOT_FOUND" in gone.stderr
    assert "qtestbed principal list" in gone.stderr


def test_quota_shows_what_remains_and_submit_stops_at_the_limit(
    profiles: dict[str, Path], tmp_path: Path
) -> None:
    alice = profiles["alice"]
    limited = qtestbed(
        "principal", "set", "alice", "--max-active-jobs", "1", profile=profiles["olivia"]
    )
    assert limited.returncode == 0, limited.stderr
    assert "max active jobs 1" in limited.stdout

    def principal_quota() -> dict[str, Any]:
        quotas = ok(qtestbed("quota", "--json", profile=alice))["quotas"]
        assert [q["scope"] for q in quotas] == ["principal", "project"]
        assert quotas[1]["name"] == "open-science"
        found: dict[str, Any] = quotas[0]
        return found

    before = principal_quota()
    assert (before["max_active_jobs"], before["remaining_active_jobs"]) == (1, 1)
    text = qtestbed("quota", profile=alice).stdout
    assert "0 of 1 in use, 1 remaining" in text
    assert "0 used, no limit" in text

    circuit = tmp_path / "ghz.qasm"
    circuit.write_bytes(ghz_qasm2(2))
    first = ok(
        qtestbed(
            "submit",
            str(circuit),
            "--device",
            "sim-open",
            "--shots",
            "100",
            "--json",
            profile=alice,
        )
    )
    assert first["job"]["state"] == "JOB_STATE_QUEUED"  # no driver runs: it stays active
    after = principal_quota()
    assert (after["active_jobs"], after["remaining_active_jobs"]) == (1, 0)
    assert after["shots_last_day"] == 100
    assert "1 of 1 in use, 0 remaining" in qtestbed("quota", profile=alice).stdout

    second = qtestbed("submit", str(circuit), "--device", "sim-open", profile=alice)
    assert second.returncode == 1
    assert "RESOURCE_EXHAUSTED" in second.stderr
    assert "quota.principal.active_jobs" in second.stderr

    other = qtestbed("quota", "--project", "lab-x", profile=alice)
    assert other.returncode == 1
    assert "NOT_FOUND" in other.stderr
    assert "--project" in other.stderr


def test_device_state_windows_and_schedule(profiles: dict[str, Path]) -> None:
    olivia = profiles["olivia"]
    state = ok(
        qtestbed(
            "device",
            "state",
            "sim-restricted",
            "maintenance",
            "--reason",
            "recalibration",
            "--json",
            profile=olivia,
        )
    )
    assert state["state"] == "OPERATING_STATE_MAINTENANCE"
    schedule = qtestbed("device", "schedule", "sim-restricted", profile=olivia)
    assert schedule.returncode == 0, schedule.stderr
    assert schedule.stdout.splitlines()[0] == "sim-restricted: MAINTENANCE - recalibration"
    # Security may read the schedule too.
    read = ok(qtestbed("device", "schedule", "--json", profile=profiles["sam"]))
    states = {d["device_id"]: d["effective_state"] for d in read["devices"]}
    assert states == {
        "sim-open": "OPERATING_STATE_ONLINE",
        "sim-restricted": "OPERATING_STATE_MAINTENANCE",
    }

    starts, ends = iso(dt.timedelta(days=30)), iso(dt.timedelta(days=31))
    reserved = qtestbed(
        "device",
        "reserve",
        "sim-restricted",
        "--project",
        "quantum-sensing",
        "--from",
        starts,
        "--until",
        ends,
        "--note",
        "sensing campaign",
        profile=olivia,
    )
    assert reserved.returncode == 0, reserved.stderr
    head = reserved.stdout.splitlines()[0]
    assert head.startswith("added reservation ")
    window_id = head.removeprefix("added reservation ")
    overlap = qtestbed(
        "device",
        "reserve",
        "sim-restricted",
        "--project",
        "facility-ops",
        "--from",
        starts,
        "--until",
        ends,
        profile=olivia,
    )
    assert overlap.returncode == 1
    assert "FAILED_PRECONDITION" in overlap.stderr
    assert window_id in overlap.stderr
    maintenance = qtestbed(
        "device",
        "maintenance",
        "sim-restricted",
        "--from",
        iso(dt.timedelta(days=40)),
        "--until",
        iso(dt.timedelta(days=40, hours=4)),
        "--json",
        profile=olivia,
    )
    windows = ok(maintenance)["windows"]
    assert [w["kind"] for w in windows] == ["WINDOW_KIND_RESERVATION", "WINDOW_KIND_MAINTENANCE"]
    reservation = windows[0]
    assert (reservation["window_id"], reservation["project"]) == (window_id, "quantum-sensing")
    assert reservation["starts_at"] == starts.replace("+00:00", "Z")
    text = qtestbed("device", "schedule", "sim-restricted", profile=olivia).stdout
    assert f"window {window_id}  RESERVATION {starts} -> {ends}  project quantum-sensing" in text
    assert "sensing campaign" in text

    removed = qtestbed("device", "unschedule", "sim-restricted", window_id, profile=olivia)
    assert removed.returncode == 0, removed.stderr
    after = ok(qtestbed("device", "schedule", "sim-restricted", "--json", profile=olivia))
    kinds = [w["kind"] for w in after["devices"][0]["windows"]]
    assert kinds == ["WINDOW_KIND_MAINTENANCE"]
    again = qtestbed("device", "unschedule", "sim-restricted", window_id, profile=olivia)
    assert again.returncode == 1
    assert "NOT_FOUND" in again.stderr
    assert "qtestbed device schedule sim-restricted" in again.stderr

    online = qtestbed("device", "state", "sim-restricted", "online", profile=olivia)
    assert online.returncode == 0, online.stderr
    assert online.stdout.splitlines()[0] == "sim-restricted: ONLINE"
    unknown = qtestbed("device", "schedule", "sim-nowhere", profile=olivia)
    assert unknown.returncode == 2
    assert "not registered" in unknown.stderr


def test_refusals_are_clear(profiles: dict[str, Path]) -> None:
    denied = qtestbed("principal", "list", profile=profiles["alice"])
    assert denied.returncode == 1
    assert "PERMISSION_DENIED" in denied.stderr
    assert "operator or security role" in denied.stderr
    # Security may read access records; only operators change them.
    written = qtestbed("device", "state", "sim-open", "draining", profile=profiles["sam"])
    assert written.returncode == 1
    assert "PERMISSION_DENIED" in written.stderr

    olivia, zoned = profiles["olivia"], "2030-01-01T10:00:00+00:00"
    for args in (
        ("device", "maintenance", "sim-open", "--from", "2030-01-01T09:00:00", "--until", zoned),
        ("principal", "set", "bob", "--clearance-until", "2030-01-01T09:00"),
        ("principal", "set", "bob", "--training", "dual-use-awareness=2030-01-01"),
    ):
        naive = qtestbed(*args, profile=olivia)
        assert naive.returncode == 2, naive.stdout
        assert "has no time zone" in naive.stderr
        assert naive.stdout == ""
    garbled = qtestbed(
        "device",
        "reserve",
        "sim-open",
        "--project",
        "open-science",
        "--from",
        "tomorrow",
        "--until",
        zoned,
        profile=olivia,
    )
    assert garbled.returncode == 2
    assert "'tomorrow' is not an ISO 8601 time" in garbled.stderr
    nothing = qtestbed("principal", "set", "bob", profile=olivia)
    assert nothing.returncode == 2
    assert "nothing to change" in nothing.stderr
    # The naive times above changed nothing.
    bob = ok(qtestbed("principal", "show", "bob", "--json", profile=olivia))
    assert bob["meta"]["version"] == 1
