"""A facility made before the issuing CAs, whose broker has run (its store knows the devices by
their old certificates), upgraded with `qtestbed facility upgrade`, its devices registered again
as the upgrade says, and a job run on it; the old certificates no longer get in."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tests.e2e.console import qtestbed
from tests.e2e.processes import Processes, running, wait_available
from tests.old_facility import make_old_style

GHZ = 'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\ncreg c[2];\nh q[0];\ncx q[0],q[1];\nmeasure q -> c;\n'  # noqa: E501


def ok(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def old(tmp_path: Path) -> Iterator[tuple[Path, Processes]]:
    """An old-style facility whose broker ran once: the store registered its devices' old
    certificates. (Today's broker is started for that with the root as the client CA, since
    the old broker's code is gone; only the store it leaves behind matters.)"""
    root = tmp_path / "fac"
    ok_init = qtestbed("init", str(root))
    assert ok_init.returncode == 0, ok_init.stderr
    make_old_style(root)
    for processes in running(root):
        seed = root / "old-broker.toml"
        seed.write_text('client_ca_cert = "ca/ca.pem"\n' + (root / "broker.toml").read_text())
        # Today's broker refuses to run beside the root key, which the old init left in ca/.
        aside = tmp_path / "root-key-aside"
        (root / "ca" / "ca.key").rename(aside)
        assert processes.stop(processes.broker(config=seed)) == 0
        aside.rename(root / "ca" / "ca.key")
        seed.unlink()
        yield root, processes


def fingerprint(pem: bytes) -> str:
    return x509.load_pem_x509_certificate(pem).fingerprint(hashes.SHA256()).hex()


def test_an_old_facility_upgraded_runs_a_job(old: tuple[Path, Processes], tmp_path: Path) -> None:
    root, processes = old
    before = qtestbed("broker", "--config", str(root / "broker.toml"))
    assert before.returncode == 2
    assert "run 'qtestbed facility upgrade'" in before.stderr

    report = ok(qtestbed("facility", "upgrade", str(root), "--json"))
    # Every CA key is now outside the folder, so the broker below may start.
    assert not list(root.rglob("*ca.key"))
    assert {p.name for p in Path(report["offline_ca"]).glob("*.key")} == {
        "ca.key",
        "clients-ca.key",
        "devices-ca.key",
    }
    again = qtestbed("facility", "upgrade", str(root))
    assert again.returncode == 2
    assert "already upgraded" in again.stderr

    processes.broker()
    olivia = processes.point_profile(root / "users" / "olivia.toml")
    alice = processes.point_profile(root / "users" / "alice.toml")
    _register_devices_again(root, report, olivia)
    users = [str(root / "users" / f"{name}.pem") for name in ("alice", "bob")]
    recorded = ok(qtestbed("credential", "record", *users, "--json", profile=olivia))
    assert [c["principal"] for c in recorded] == ["alice", "bob"]
    listed = ok(qtestbed("credential", "list", "--json", profile=olivia))["credentials"]
    assert {c["serial"] for c in listed} == {c["serial"] for c in recorded}
    processes.driver("sim-open")
    wait_available(alice, "sim-open")

    circuit = tmp_path / "bell.qasm"
    circuit.write_text(GHZ)
    args = ("submit", str(circuit), "--device", "sim-open", "--shots", "100", "--wait", "--json")
    body = ok(qtestbed(*args, profile=alice))
    assert body["job"]["state"] == "JOB_STATE_COMPLETED"
    assert body["result"]["receipt_problems"] == []

    # alice's old certificate (root-signed, named by CN) is refused by the upgraded broker.
    old_alice = tmp_path / "old-alice.toml"
    backup = Path(report["backup"])
    old_alice.write_text(
        alice.read_text()
        .replace('cert = "alice.pem"', f'cert = "{backup}/users/alice.pem"')
        .replace('ca_cert = "../ca/ca.pem"', f'ca_cert = "{root}/ca/ca.pem"')
        .replace('key = "alice.key"', f'key = "{root}/users/alice.key"')
    )
    refused = qtestbed("devices", profile=old_alice)
    assert refused.returncode == 1
    assert "UNAUTHENTICATED" in refused.stderr


def _register_devices_again(root: Path, report: dict[str, Any], olivia: Path) -> None:
    """The store still names the old certificate; the upgrade's commands register the new."""
    backup = Path(report["backup"])
    listed = ok(qtestbed("device", "list", "--json", profile=olivia))["devices"]
    registered = {d["device_id"]: d["fingerprint"] for d in listed}
    assert registered["sim-open"] == fingerprint((backup / "devices" / "sim-open.pem").read_bytes())
    for command in report["register_devices"]:
        words = command.replace("OPERATOR", "olivia").split()
        assert words[:3] == ["qtestbed", "device", "register"]
        ok(qtestbed(*words[1:], "--json"))  # as printed, with the operator's profile
    listed = ok(qtestbed("device", "list", "--json", profile=olivia))["devices"]
    new = fingerprint((root / "devices" / "sim-open.pem").read_bytes())
    sim_open = next(d for d in listed if d["device_id"] == "sim-open")
    assert (sim_open["fingerprint"], sim_open["status"]) == (new, "DEVICE_STATUS_ACTIVE")
