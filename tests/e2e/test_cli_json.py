"""Every `--json` output of the console script, parsed: proto field names, zero values kept,
64-bit integers and measurement counts as numbers, one document per command (one a line for
`watch` and `audit stream`). One facility for the module: a broker process and one driver."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from qtestbed.cli.demo import ghz_qasm2
from qtestbed.testing import LocalFacility
from tests.e2e.console import json_lines, json_output, qtestbed, together

USERS = ("alice", "bob", "olivia", "sam")


@dataclass(frozen=True, kw_only=True, slots=True)
class Site:
    root: Path
    circuit: Path

    def profile(self, user: str) -> Path:
        return self.root / "users" / f"{user}.toml"

    def json(self, user: str, *args: str, code: int = 0) -> Any:
        """What `qtestbed ARGS --json` printed for `user`, as parsed JSON."""
        return json_output(qtestbed(*args, "--json", profile=self.profile(user)), code=code)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("json") / "fac"
    with LocalFacility(root) as facility:
        addresses = facility.start_broker_process()
        facility.start_driver("sim-open")
        for name in USERS:
            path = root / "users" / f"{name}.toml"
            path.write_text(path.read_text().replace("127.0.0.1:50051", addresses.grpc))
        facility.wait_available(facility.client("alice"), "sim-open")
        circuit = root / "ghz.qasm"
        circuit.write_bytes(ghz_qasm2(3))
        yield Site(root=root, circuit=circuit)


def assert_counts(counts: Any, shots: int, outcomes: set[str]) -> None:
    """Counts are an object of bitstring -> int (never a string), adding up to the shots."""
    assert isinstance(counts, dict)
    assert set(counts) <= outcomes
    assert all(type(n) is int for n in counts.values()), counts
    assert sum(counts.values()) == shots


def iso(days: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(days=days)).replace(microsecond=0).isoformat()


def test_job_commands(site: Site, tmp_path: Path) -> None:
    done = site.json("alice", "submit", str(site.circuit), "--device", "sim-open", "--wait")
    job = done["job"]
    job_id = job["job_id"]
    assert job["state"] == "JOB_STATE_COMPLETED"
    # Zero values are printed, not dropped: a finished job is in no queue and waits for nothing.
    assert (job["queue_position"], job["waiting_for"], job["rule_id"]) == (0, "", "")
    assert job["attempts"] >= 1
    assert_counts(done["result"]["counts"], 1024, {"000", "111"})
    assert done["result"]["receipt_problems"] == []

    bundle = tmp_path / "bundle.json"
    status, result, watched, jobs = together(
        lambda: site.json("alice", "status", job_id),
        lambda: site.json("alice", "result", job_id, "--save", str(bundle)),
        lambda: json_lines(qtestbed("watch", job_id, "--json", profile=site.profile("alice"))),
        lambda: site.json("alice", "jobs"),
    )
    assert (status["job_id"], status["queue_position"], status["shots"]) == (job_id, 0, 1024)
    assert_counts(result["counts"], 1024, {"000", "111"})
    assert (result["receipt_valid"], result["receipt_problems"]) == (True, [])
    assert not {"receipt", "device_certificate"} & set(result)  # for --save, not for reading
    assert watched[-1]["state"] == "JOB_STATE_COMPLETED"
    assert all("queue_position" in event for event in watched)
    assert [j["job_id"] for j in jobs] == [job_id]
    assert jobs[0]["queue_position"] == 0

    ca = str(site.root / "ca" / "ca.pem")
    verified = json_output(qtestbed("receipt", "verify", str(bundle), "--ca", ca, "--json"))
    assert (verified["valid"], verified["problems"], verified["job_id"]) == (True, [], job_id)
    assert isinstance(verified["measurements"], dict)


def test_memory_is_shown_per_shot_and_a_changed_shot_fails_offline_verification(
    site: Site, tmp_path: Path
) -> None:
    done = site.json(
        "alice",
        "submit",
        str(site.circuit),
        "--device",
        "sim-open",
        "--shots",
        "40",
        "--memory",
        "--wait",
    )
    job_id = done["job"]["job_id"]
    assert done["job"]["memory"] is True
    bundle = tmp_path / "memory.json"
    result = site.json("alice", "result", job_id, "--save", str(bundle))
    assert (result["receipt_valid"], result["receipt_problems"]) == (True, [])
    shots = result["memory"]
    assert len(shots) == 40
    assert set(shots) <= {"000", "111"}
    assert {bits: shots.count(bits) for bits in set(shots)} == result["counts"]

    ca = str(site.root / "ca" / "ca.pem")
    verified = json_output(qtestbed("receipt", "verify", str(bundle), "--ca", ca, "--json"))
    assert (verified["valid"], verified["problems"]) == (True, [])
    saved = json.loads(bundle.read_text())
    packed = bytearray(base64.b64decode(saved["memory"]["packed"]))
    packed[7] ^= 0x07  # one shot changed: 000 <-> 111, the counts in the file left alone
    saved["memory"]["packed"] = base64.b64encode(bytes(packed)).decode()
    bundle.write_text(json.dumps(saved))
    forged = json_output(qtestbed("receipt", "verify", str(bundle), "--ca", ca, "--json"), code=1)
    assert forged["valid"] is False
    assert "receipt memory digest does not match the per-shot memory" in forged["problems"]
    assert "the counts are not the histogram of the per-shot memory" in forged["problems"]


def test_queued_job_cancel_devices_and_quota(site: Site) -> None:
    # No driver runs sim-restricted: bob's job waits there until he cancels it.
    queued = site.json("bob", "submit", str(site.circuit), "--device", "sim-restricted")["job"]
    assert queued["state"] == "JOB_STATE_QUEUED"
    assert queued["attempts"] == 0
    cancelled, listed, quota = together(
        lambda: site.json("bob", "cancel", queued["job_id"]),
        lambda: site.json("alice", "devices"),
        lambda: site.json("alice", "quota"),
    )
    assert (cancelled["state"], cancelled["queue_position"]) == ("JOB_STATE_CANCELLED", 0)
    devices = {d["device_id"]: d for d in listed}
    assert set(devices) == {"sim-open"}  # sim-restricted is above alice's tier
    assert (devices["sim-open"]["available"], devices["sim-open"]["num_qubits"]) == (True, 5)
    assert "queue_depth" in devices["sim-open"]
    quotas = quota["quotas"]
    assert [q["scope"] for q in quotas] == ["principal", "project"]
    # 0 means no limit; it is printed, and 64-bit totals are numbers.
    assert (quotas[0]["max_active_jobs"], quotas[0]["active_jobs"]) == (0, 0)
    assert type(quotas[0]["shots_last_day"]) is int  # a uint64: 1024 after test_job_commands


def test_session_commands(site: Site) -> None:
    opened = site.json("alice", "session", "open", "sim-open")
    session_id = opened["session_id"]
    assert (opened["state"], opened["jobs"], opened["closed_reason"]) == (
        "SESSION_STATE_OPEN",
        0,
        "",
    )
    shown, listed = together(
        lambda: site.json("alice", "session", "show", session_id),
        lambda: site.json("alice", "session", "list"),
    )
    assert (shown["session_id"], shown["device_id"]) == (session_id, "sim-open")
    assert [s["session_id"] for s in listed] == [session_id]
    closed = site.json("alice", "session", "close", session_id, "--reason", "done")
    assert (closed["state"], closed["closed_reason"]) == ("SESSION_STATE_CLOSED", "done")


def test_principal_and_project_commands(site: Site) -> None:
    # At most one change in each group that runs together, so no change races another.
    principals, alice, created = together(
        lambda: site.json("olivia", "principal", "list"),
        lambda: site.json("olivia", "principal", "show", "alice"),
        lambda: site.json(
            "olivia", "principal", "set", "carol", "--tier", "open", "--role", "researcher"
        ),
    )
    names = {r["principal"]["name"] for r in principals["principals"]}
    assert {"alice", "bob", "olivia", "sam"} <= names
    assert alice["principal"]["quota"] == {"max_active_jobs": 0, "max_shots_per_day": 0}
    assert type(alice["meta"]["version"]) is int
    assert (created["principal"]["name"], created["meta"]["version"]) == ("carol", 1)
    assert created["principal"]["projects"] == []
    removed, projects = together(
        lambda: site.json("olivia", "principal", "remove", "carol"),
        lambda: site.json("olivia", "project", "list"),
    )
    assert removed == {}  # an empty reply is an empty object
    assert "open-science" in {r["project"]["name"] for r in projects["projects"]}

    project = site.json("olivia", "project", "set", "json-lab", "--weight", "2")
    assert project["project"] == {
        "name": "json-lab",
        "description": "",
        "weight": 2,
        "quota": {"max_active_jobs": 0, "max_shots_per_day": 0},
    }
    assert project["meta"]["version"] == 1


def test_policy_explain_and_audit(site: Site, tmp_path: Path) -> None:
    principal, device = tmp_path / "p.json", tmp_path / "d.json"
    principal.write_text(json.dumps({"name": "a", "tier": "open", "tier_rank": 0}))
    device.write_text(json.dumps({"device_id": "q", "tier": "open", "tier_rank": 0}))
    offline = ["--principal-json", str(principal), "--device-json", str(device)]
    config = str(site.root / "broker.toml")
    denied, explained, entries, verdict = together(
        lambda: site.json(
            "olivia", "policy", "explain", "--principal", "alice", "--device", "sim-restricted",
            code=1,
        ),
        lambda: json_output(
            qtestbed("policy", "explain", *offline, "--action", "ViewDevice", "--json")
        ),
        lambda: json_lines(qtestbed("audit", "stream", "--json", profile=site.profile("sam"))),
        lambda: json_output(qtestbed("audit", "verify", "--config", config, "--json")),
    )  # fmt: skip
    assert denied["allowed"] is False
    assert any(r["met"] is False for r in denied["requirements"])  # false is printed too
    assert all(set(r) == {"rule_id", "met", "text"} for r in denied["requirements"])
    assert (explained["decision"], explained["policy_ids"]) == ("allow", ["researcher-view"])
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))  # numbers, in order
    assert {"kind", "actor", "subject", "entry_hash"} <= set(entries[0])
    assert verdict["ok"] is True
    assert verdict["entries_checked"] >= 1
    assert isinstance(verdict["key_id"], str)


def test_device_schedule_commands(site: Site) -> None:
    # One after another: each changes the same record (the device's operations).
    state = site.json("olivia", "device", "state", "sim-restricted", "draining")
    assert (state["state"], state["reason"]) == ("OPERATING_STATE_DRAINING", "")
    site.json(
        "olivia", "device", "maintenance", "sim-restricted", "--from", iso(30), "--until", iso(31)
    )
    reserved = site.json(
        "olivia", "device", "reserve", "sim-restricted", "--project", "quantum-sensing",
        "--from", iso(40), "--until", iso(41),
    )  # fmt: skip
    kinds = [w["kind"] for w in reserved["windows"]]
    assert kinds == ["WINDOW_KIND_MAINTENANCE", "WINDOW_KIND_RESERVATION"]
    first = reserved["windows"][0]["window_id"]
    removed = site.json("olivia", "device", "unschedule", "sim-restricted", first)
    assert [w["kind"] for w in removed["windows"]] == ["WINDOW_KIND_RESERVATION"]
    schedule = site.json("olivia", "device", "schedule", "sim-restricted")
    assert [d["device_id"] for d in schedule["devices"]] == ["sim-restricted"]


def test_device_registry_commands(site: Site) -> None:
    reference = ["--control-software", "cs 1", "--driver-build", "db 1", "--num-qubits", "2"]
    reference += ["--firmware", "fw 1", "--calibration-digest", "0" * 64]
    chain = str(site.root / "devices" / "sim-restricted.pem")
    # At most one change in each group that runs together, so no change races another.
    listed, history, published = together(
        lambda: site.json("olivia", "device", "list"),
        lambda: site.json("olivia", "device", "history", "sim-open"),
        lambda: site.json("olivia", "reference", "set", "--model", "json-model", *reference),
    )
    devices = {d["device_id"]: d for d in listed["devices"]}
    assert devices["sim-open"]["status"] == "DEVICE_STATUS_ACTIVE"
    assert history["events"][0]["status"] == "affirming"
    assert history["events"][0]["reasons"] == []  # an empty list is printed, not dropped
    assert (published["scope_id"], published["version"]) == ("json-model", 1)
    versions, registered = together(
        lambda: site.json("olivia", "reference", "list", "--model", "json-model"),
        lambda: site.json("olivia", "device", "register", chain, "--tier", "restricted"),
    )
    assert [v["version"] for v in versions["versions"]] == [1]
    assert (registered["device_id"], registered["tier"]) == ("sim-restricted", "restricted")

    # Last in the module, as it cannot be undone: sim-restricted stays revoked.
    revoked = site.json("olivia", "device", "revoke", "sim-restricted", "--reason", "json test")
    assert (revoked["status"], revoked["status_reason"]) == ("DEVICE_STATUS_REVOKED", "json test")
    # Only a quarantined device can be released: a refusal prints no JSON, only the reason.
    refused = qtestbed(
        "device", "release", "sim-restricted", "--json", profile=site.profile("olivia")
    )
    assert (refused.returncode, refused.stdout) == (1, "")
    assert "FAILED_PRECONDITION" in refused.stderr


def test_demo_counts_are_objects() -> None:
    summary = json_output(qtestbed("demo", "--json", timeout=300))
    assert summary["ok"] is True
    jobs = {job["label"]: job for job in summary["jobs"]}
    assert jobs["GHZ-5"]["state"] == "COMPLETED"
    assert jobs["GHZ-3, other project"]["state"] == "PERMISSION_DENIED"
    assert jobs["GHZ-3 above tier"]["state"] == "NOT_FOUND"
    assert jobs["GHZ-3 above tier"]["top_outcomes"] == {}
    ghz = jobs["GHZ-5"]["top_outcomes"]
    assert set(ghz) <= {"00000", "11111"}
    assert all(type(n) is int for n in ghz.values())
    assert list(ghz.values()) == sorted(ghz.values(), reverse=True)  # most frequent first
    qiskit = jobs["GHZ-3 via Qiskit"]
    assert qiskit["receipt"] == "valid"
    assert set(qiskit["top_outcomes"]) <= {"000", "111"}
    assert all(type(n) is int for n in qiskit["top_outcomes"].values())
    assert summary["broker"]["metrics"].startswith("https://127.0.0.1:")
    assert summary["report"][0].startswith("# Transparency report")
    assert any("Audit log:** verified" in line for line in summary["report"])
