"""A new researcher, from nothing to a completed job, with the console script only; then their
credential is revoked and their next command is refused. The facility's CA keys live in an
"offline" folder the broker is never told about, and the broker's every file open is logged to
show it never touches them.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.console import qtestbed
from tests.e2e.processes import OpenLog, Processes, running, wait_available

GHZ = 'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[3];\ncreg c[3];\nh q[0];\ncx q[0],q[1];\ncx q[1],q[2];\nmeasure q -> c;\n'  # noqa: E501
CA_KEYS = ("ca.key", "clients-ca.key", "devices-ca.key")


def ok(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout) if done.stdout.lstrip().startswith(("{", "[")) else done.stdout


@pytest.fixture
def facility(tmp_path: Path) -> Path:
    """`qtestbed init`, which writes the CA keys (with the CA certificates the operator needs
    beside them to issue) to an offline folder of their own, owner-only."""
    root = tmp_path / "fac"
    offline = tmp_path / "offline"
    made = ok(qtestbed("init", str(root), "--offline-ca", str(offline)))
    assert f"CA keys: {offline}" in made
    assert "Take this folder offline now" in made
    assert not list(root.rglob("*ca.key")), "no CA key may be in the broker's folder"
    assert {p.name for p in offline.iterdir()} >= {*CA_KEYS, "clients-ca.pem"}
    assert offline.stat().st_mode & 0o777 == 0o700
    assert all((offline / name).stat().st_mode & 0o777 == 0o600 for name in CA_KEYS)
    return root


@pytest.fixture
def processes(facility: Path) -> Iterator[Processes]:
    yield from running(facility)


def test_a_new_researcher_from_nothing_to_a_job_then_revoked(
    facility: Path, processes: Processes, tmp_path: Path
) -> None:
    offline, opened = tmp_path / "offline", OpenLog(tmp_path / "open-log")
    broker = processes.broker(env=opened.env)  # starts with no CA key anywhere it looks
    processes.driver("sim-open")
    olivia = processes.point_profile(facility / "users" / "olivia.toml")
    sam = processes.point_profile(facility / "users" / "sam.toml")

    _operator_registers_carol(olivia)
    carol = _carol_requests(facility, processes.grpc, tmp_path / "carol")
    serial = _operator_issues(carol.parent / "carol.csr", offline, facility, olivia)

    wait_available(carol, "sim-open")
    _carol_runs_a_job(carol, tmp_path, facility)
    renewed = _renewal_keeps_carols_key_working(carol, offline, olivia)
    listed = ok(qtestbed("credential", "list", "--principal", "carol", "--json", profile=olivia))
    found = {(c["serial"], c["recorded_by"], c["revoked"]) for c in listed["credentials"]}
    assert found == {(serial, "olivia", False), (renewed, "olivia", True)}

    revoked = ok(
        qtestbed("credential", "revoke", serial, "--reason", "left the lab", "--json", profile=sam)
    )
    assert (revoked["revoked"], revoked["revoked_by"]) == (True, "sam")
    refused = qtestbed("devices", profile=carol)
    assert refused.returncode == 1, refused.stdout
    assert "UNAUTHENTICATED: this credential was revoked" in refused.stderr
    _a_revoked_credential_is_not_renewed(carol.parent / "carol.pem", offline, olivia)

    assert processes.stop(broker) == 0
    _broker_never_opened_a_ca_key(opened, facility, offline)


def _operator_registers_carol(olivia: Path) -> None:
    until = (dt.datetime.now(dt.UTC) + dt.timedelta(days=90)).isoformat(timespec="seconds")
    created = ok(
        qtestbed(
            "principal",
            "set",
            "carol",
            "--tier",
            "open",
            "--role",
            "researcher",
            "--add-project",
            "open-science",
            "--clearance-until",
            until,
            "--json",
            profile=olivia,
        )
    )
    assert created["principal"]["name"] == "carol"


def _carol_requests(facility: Path, broker: str, folder: Path) -> Path:
    """Carol has the facility id, the broker's address and the root certificate: public."""
    made = ok(
        qtestbed(
            "credential",
            "request",
            "carol",
            "--facility-id",
            "demo",
            "--out",
            str(folder),
            "--broker",
            broker,
            "--ca-cert",
            str(facility / "ca" / "ca.pem"),
            "--json",
        )
    )
    assert made["principal_uri"] == "qtestbed://demo/principal/carol"
    assert (folder / "carol.key").stat().st_mode & 0o077 == 0
    assert not (folder / "carol.pem").exists()
    return Path(made["profile"])


def _operator_issues(csr: Path, offline: Path, facility: Path, olivia: Path) -> str:
    """The CSR is all that travels to the operator; the certificate all that travels back."""
    issued = ok(
        qtestbed(
            "credential",
            "issue",
            str(csr),
            "--name",
            "carol",
            "--ca-dir",
            str(offline),
            "--facility",
            str(facility / "facility.toml"),
            "--out",
            str(csr.parent / "carol.pem"),
            "--record",
            "--json",
            profile=olivia,
        )
    )
    assert issued["recorded"]["principal"] == "carol"
    assert issued["recorded"]["serial"] == issued["serial"]
    serial: str = issued["serial"]
    return serial


def _carol_runs_a_job(carol: Path, tmp_path: Path, facility: Path) -> None:
    circuit = tmp_path / "ghz.qasm"
    circuit.write_text(GHZ)
    args = ("submit", str(circuit), "--device", "sim-open", "--shots", "200", "--wait", "--json")
    body = ok(qtestbed(*args, profile=carol))
    assert body["job"]["state"] == "JOB_STATE_COMPLETED"
    assert body["job"]["owner"] == "carol"
    assert body["result"]["receipt_problems"] == []
    assert set(body["result"]["counts"]) <= {"000", "111"}
    bundle = tmp_path / "bundle.json"
    ok(qtestbed("result", body["job"]["job_id"], "--save", str(bundle), profile=carol))
    root = str(facility / "ca" / "ca.pem")
    verified = qtestbed("receipt", "verify", str(bundle), "--ca", root, "--circuit", str(circuit))
    assert verified.returncode == 0, verified.stdout + verified.stderr


def _renewal_keeps_carols_key_working(carol: Path, offline: Path, olivia: Path) -> str:
    """A renewed certificate (new serial) works with the key carol already has; she keeps
    using the first one here, so that its revocation below is what refuses her."""
    cert = carol.parent / "carol.pem"
    renewed = carol.parent / "carol-2.pem"
    argv = ("credential", "renew", str(cert), "--ca-dir", str(offline), "--out", str(renewed))
    body = ok(qtestbed(*argv, "--days", "7", "--record", "--json", profile=olivia))
    assert body["recorded"]["principal"] == "carol"
    second = carol.with_name("carol-2.toml")
    second.write_text(carol.read_text().replace('cert = "carol.pem"', 'cert = "carol-2.pem"'))
    devices = ok(qtestbed("devices", "--json", profile=second))
    assert [d["device_id"] for d in devices] == ["sim-open"]
    recorded_serial: str = body["serial"]
    revoke = ("credential", "revoke", recorded_serial, "--reason", "test renewal only")
    ok(qtestbed(*revoke, "--json", profile=olivia))
    return recorded_serial


def _a_revoked_credential_is_not_renewed(cert: Path, offline: Path, olivia: Path) -> None:
    renewed = cert.with_name("carol-renewed.pem")
    argv = ("credential", "renew", str(cert), "--ca-dir", str(offline), "--out", str(renewed))
    done = qtestbed(*argv, "--record", profile=olivia)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "was revoked (left the lab); its key is not certified again" in done.stderr
    assert not renewed.exists()


def _broker_never_opened_a_ca_key(opened: OpenLog, facility: Path, offline: Path) -> None:
    paths = opened.opened()
    # The log works: it holds the files the broker must open (its key, the client CA).
    assert facility.resolve() / "broker" / "broker.key" in paths, sorted(paths)[:20]
    assert facility.resolve() / "ca" / "clients-ca.pem" in paths
    assert not [p for p in paths if p.name in CA_KEYS]
    ca_files = {p.name for p in paths if p.parent == facility.resolve() / "ca"}
    assert ca_files == {"ca.pem", "clients-ca.pem"}  # certificates only
    assert not [p for p in paths if p.is_relative_to(offline.resolve())]
