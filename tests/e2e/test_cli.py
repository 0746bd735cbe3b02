"""The console script as a user runs it: init, broker, driver, submit, status, result, ..."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from qtestbed.cli.demo import ghz_qasm2
from qtestbed.testing import LocalFacility
from tests.e2e.console import qtestbed


@pytest.fixture
def cli_facility(tmp_path: Path) -> Iterator[tuple[LocalFacility, Path]]:
    root = tmp_path / "fac"
    init = qtestbed("init", str(root))
    assert init.returncode == 0, init.stderr
    assert (root / "facility.toml").exists()
    with LocalFacility(root) as facility:
        addresses = facility.start_broker_process()
        facility.start_driver("sim-open")
        profile = root / "users" / "alice.toml"
        text = profile.read_text().replace("127.0.0.1:50051", addresses.grpc)
        profile.write_text(text)
        facility.wait_available(facility.client("alice"), "sim-open")
        yield facility, profile


def test_init_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "something").write_text("x")
    done = qtestbed("init", str(tmp_path))
    assert done.returncode != 0
    assert "not empty" in done.stderr


def test_researcher_commands(cli_facility: tuple[LocalFacility, Path], tmp_path: Path) -> None:
    _facility, profile = cli_facility
    circuit = tmp_path / "ghz.qasm"
    circuit.write_bytes(ghz_qasm2(3))
    submitted = qtestbed(
        "submit",
        str(circuit),
        "--device",
        "sim-open",
        "--shots",
        "300",
        "--wait",
        "--json",
        profile=profile,
    )
    assert submitted.returncode == 0, submitted.stderr
    body = json.loads(submitted.stdout)
    job_id = body["job"]["job_id"]
    assert body["job"]["state"] == "JOB_STATE_COMPLETED"
    assert set(body["result"]["counts"]) <= {"000", "111"}
    assert body["result"]["receipt_problems"] == []

    status = qtestbed("status", job_id, "--json", profile=profile)
    assert json.loads(status.stdout)["state"] == "JOB_STATE_COMPLETED"
    bundle = tmp_path / "bundle.json"
    result = qtestbed("result", job_id, "--save", str(bundle), profile=profile)
    assert result.returncode == 0
    assert "receipt: valid" in result.stdout
    ca = str(_facility.root / "ca" / "ca.pem")
    verified = qtestbed("receipt", "verify", str(bundle), "--ca", ca, "--circuit", str(circuit))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "firmware: qtestbed-simfw 1.0" in verified.stdout
    body = json.loads(bundle.read_text())
    body["counts"]["000"] += 1
    bundle.write_text(json.dumps(body))
    forged = qtestbed("receipt", "verify", str(bundle), "--ca", ca, "--json")
    assert forged.returncode == 1
    assert json.loads(forged.stdout)["valid"] is False
    jobs = qtestbed("jobs", "--json", profile=profile)
    assert [j["job_id"] for j in json.loads(jobs.stdout)] == [job_id]
    devices = qtestbed("devices", profile=profile)
    assert "sim-open" in devices.stdout
    assert "AFFIRMING" in devices.stdout
    cancel = qtestbed("cancel", job_id, profile=profile)
    assert cancel.returncode == 1
    assert "already COMPLETED" in cancel.stderr


def test_submit_errors_are_clear(cli_facility: tuple[LocalFacility, Path], tmp_path: Path) -> None:
    _facility, profile = cli_facility
    bad = tmp_path / "bad.qasm"
    bad.write_text("OPENQASM 2.0;\nqreg q[1];\nnotagate q[0];\n")
    done = qtestbed("submit", str(bad), "--device", "sim-open", profile=profile)
    assert done.returncode == 1
    assert "INVALID_ARGUMENT" in done.stderr
    good = tmp_path / "good.qasm"
    good.write_bytes(ghz_qasm2(2))
    hidden = qtestbed("submit", str(good), "--device", "sim-restricted", profile=profile)
    assert hidden.returncode == 1
    assert "NOT_FOUND" in hidden.stderr
    denied = qtestbed(
        "submit", str(good), "--device", "sim-open", "--project", "nuclear", profile=profile
    )
    assert denied.returncode == 1
    assert "PERMISSION_DENIED" in denied.stderr
    assert "researcher-submit/project" in denied.stderr
    missing = qtestbed(
        "submit", str(tmp_path / "nope.qasm"), "--device", "sim-open", profile=profile
    )
    assert missing.returncode == 2
    assert "cannot read" in missing.stderr
    no_profile = qtestbed("jobs")
    assert no_profile.returncode == 2
    assert "QTESTBED_PROFILE" in no_profile.stderr


def test_policy_check_and_corpus_through_the_console_script(tmp_path: Path) -> None:
    checked = qtestbed("policy", "check")
    assert checked.returncode == 0, checked.stderr
    assert "researcher-submit" in checked.stdout
    corpus = Path(__file__).resolve().parents[2] / "broker" / "policy" / "corpus"
    tested = qtestbed("policy", "test", str(corpus / "default_cases.json"))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    broken = tmp_path / "broken.cedar"
    broken.write_text('@id("x")\npermit(principal, action, resource) when { principal.nope };\n')
    refused = qtestbed("policy", "check", "--policies", str(broken))
    assert refused.returncode != 0


def test_live_policy_explain_for_operators_only(cli_facility: tuple[LocalFacility, Path]) -> None:
    facility, _alice = cli_facility
    olivia = facility.root / "users" / "olivia.toml"
    assert facility.addresses is not None
    olivia.write_text(olivia.read_text().replace("127.0.0.1:50051", facility.addresses.grpc))
    explained = qtestbed(
        "policy", "explain", "--principal", "alice", "--device", "sim-restricted", profile=olivia
    )
    assert explained.returncode == 1, explained.stderr
    assert "decision: DENY" in explained.stdout
    assert "[NOT met] researcher-submit/tier" in explained.stdout
    allowed = qtestbed(
        "policy",
        "explain",
        "--principal",
        "alice",
        "--device",
        "sim-open",
        "--json",
        profile=olivia,
    )
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert json.loads(allowed.stdout)["allowed"] is True
    refused = qtestbed(
        "policy", "explain", "--principal", "bob", "--device", "sim-open", profile=_alice
    )
    assert refused.returncode == 1
    assert "PERMISSION_DENIED" in refused.stderr


def test_sessions_priorities_selectors_and_live_watch_from_the_cli(
    cli_facility: tuple[LocalFacility, Path], tmp_path: Path
) -> None:
    _facility, profile = cli_facility
    circuit = tmp_path / "ghz.qasm"
    circuit.write_bytes(ghz_qasm2(3))
    opened = qtestbed("session", "open", "sim-open", "--json", profile=profile)
    assert opened.returncode == 0, opened.stderr
    session_id = json.loads(opened.stdout)["session_id"]
    submitted = qtestbed(
        "submit",
        str(circuit),
        "--session",
        session_id,
        "--priority",
        "high",
        "--json",
        profile=profile,
    )
    assert submitted.returncode == 0, submitted.stderr
    job = json.loads(submitted.stdout)["job"]
    assert job["session_id"] == session_id
    assert job["priority"] == "JOB_PRIORITY_HIGH"
    watched = qtestbed("watch", job["job_id"], profile=profile)
    assert watched.returncode == 0, watched.stderr
    last = [line for line in watched.stdout.splitlines() if not line.startswith(" ")][-1]
    assert "COMPLETED" in last
    assert "ran under evidence" in watched.stdout
    listed = qtestbed("session", "list", profile=profile)
    assert session_id in listed.stdout
    closed = qtestbed("session", "close", session_id, "--reason", "done", profile=profile)
    assert closed.returncode == 0
    assert "closed" in closed.stdout
    assert "done" in closed.stdout
    chosen = qtestbed(
        "submit",
        str(circuit),
        "--min-qubits",
        "3",
        "--basis-gate",
        "cx",
        "--json",
        profile=profile,
    )
    assert json.loads(chosen.stdout)["job"]["device_id"] == "sim-open"
    none = qtestbed("submit", str(circuit), "--min-qubits", "50", profile=profile)
    assert none.returncode == 1
    assert "no attested device you may use matches" in none.stderr
