"""Just-in-time access as people run it: `qtestbed access request|approve|deny|list|revoke`
and the refused direct edits, each a subprocess of the console script against one real broker
process (no driver, so a submitted job stays queued)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qtestbed.cli.demo import ghz_qasm2
from qtestbed.testing import LocalFacility
from tests.e2e.console import qtestbed

USERS = ("alice", "olivia", "petra", "sam", "sean")


def ok(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def refused(done: subprocess.CompletedProcess[str], *words: str) -> str:
    assert done.returncode == 1, done.stdout + done.stderr
    for word in words:
        assert word in done.stderr, done.stderr
    return done.stderr


@pytest.fixture(scope="module")
def profiles(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    root = tmp_path_factory.mktemp("grants") / "fac"
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


def _devices(profile: Path) -> set[str]:
    return {d["device_id"] for d in ok(qtestbed("devices", "--json", profile=profile))}


def test_direct_elevation_and_self_edit_are_refused_with_what_to_do(
    profiles: dict[str, Path],
) -> None:
    olivia = profiles["olivia"]
    refused(
        qtestbed("principal", "set", "alice", "--tier", "restricted", profile=olivia),
        "PERMISSION_DENIED",
        "[rule access.elevation]",
        "qtestbed access request --principal alice --tier restricted",
    )
    refused(
        qtestbed("principal", "set", "alice", "--add-licence", "EAR-4A906", profile=olivia),
        "[rule access.elevation]",
    )
    refused(
        qtestbed("principal", "set", "olivia", "--affiliation", "x", profile=olivia),
        "[rule access.self-edit]",
    )


def test_a_device_grant_is_requested_approved_by_another_and_revoked(
    profiles: dict[str, Path], tmp_path: Path
) -> None:
    alice, petra = profiles["alice"], profiles["petra"]
    assert "sim-restricted" not in _devices(alice)
    filed = ok(
        qtestbed(
            "access",
            "request",
            "--device",
            "sim-restricted",
            "--for",
            "7d",
            "--reason",
            "calibration study",
            "--json",
            profile=alice,
        )
    )
    assert (filed["state"], filed["principal"]) == ("ACCESS_REQUEST_STATE_PENDING", "alice")
    request_id = filed["request_id"]
    refused(qtestbed("access", "approve", request_id, profile=alice), "role.required")
    listed = qtestbed("access", "list", profile=petra)
    assert listed.returncode == 0, listed.stderr
    assert f"{request_id}  alice" in listed.stdout
    assert "device sim-restricted" in listed.stdout
    approved = qtestbed("access", "approve", request_id, profile=petra)
    assert approved.returncode == 0, approved.stderr
    assert "granted until" in approved.stdout
    assert "sim-restricted" in _devices(alice)
    circuit = tmp_path / "ghz.qasm"
    circuit.write_bytes(ghz_qasm2(2))
    submitted = qtestbed(
        "submit", str(circuit), "--device", "sim-restricted", "--shots", "10", profile=alice
    )
    assert submitted.returncode == 0, submitted.stderr
    no_reason = qtestbed("access", "revoke", request_id, profile=petra)
    assert no_reason.returncode == 2  # argparse: --reason is required
    revoked = ok(
        qtestbed("access", "revoke", request_id, "--reason", "done", "--json", profile=petra)
    )
    assert (revoked["state"], revoked["decided_by"]) == ("ACCESS_REQUEST_STATE_REVOKED", "petra")
    assert "sim-restricted" not in _devices(alice)
    mine = ok(qtestbed("access", "list", "--all", "--json", profile=alice))["requests"]
    assert [(r["request_id"], r["state"]) for r in mine] == [
        (request_id, "ACCESS_REQUEST_STATE_REVOKED")
    ]


def test_break_glass_takes_two_security_principals_and_a_denial_a_reason(
    profiles: dict[str, Path],
) -> None:
    alice, petra, sam, sean = (profiles[n] for n in ("alice", "petra", "sam", "sean"))
    args = ("access", "request", "--tier", "controlled", "--for", "12h", "--break-glass")
    filed = ok(qtestbed(*args, "--reason", "incident 7", "--json", profile=alice))
    request_id = filed["request_id"]
    refused(qtestbed("access", "approve", request_id, profile=petra), "[rule access.break-glass]")
    first = qtestbed("access", "approve", request_id, profile=sam)
    assert first.returncode == 0, first.stderr
    assert "pending (1/2 approvals) [break-glass]" in first.stdout
    refused(qtestbed("access", "approve", request_id, profile=sam), "[rule access.break-glass]")
    granted = ok(qtestbed("access", "approve", request_id, "--json", profile=sean))
    assert granted["state"] == "ACCESS_REQUEST_STATE_GRANTED"
    assert [a["approver"] for a in granted["approvals"]] == ["sam", "sean"]
    too_long = qtestbed(*args[:4], "--for", "2d", "--break-glass", "--reason", "x", profile=alice)
    refused(too_long, "INVALID_ARGUMENT", "at most 1 day(s)")

    licence = ok(
        qtestbed(
            "access",
            "request",
            "--licence",
            "EAR-4A906",
            "--for",
            "30d",
            "--reason",
            "collaboration",
            "--json",
            profile=alice,
        )
    )
    denied = ok(
        qtestbed(
            "access",
            "deny",
            licence["request_id"],
            "--reason",
            "not this quarter",
            "--json",
            profile=petra,
        )
    )
    assert (denied["state"], denied["decision_reason"]) == (
        "ACCESS_REQUEST_STATE_DENIED",
        "not this quarter",
    )
