"""Witnessed inclusion proofs end to end: a real broker process, a real driver, the witness as
its own process and the researcher's console commands. Before a witness has cosigned, the saved
bundle says it is unwitnessed and `receipt verify --witness-key` fails naming why; once the
witness has cosigned a checkpoint covering the result, saving again gives a bundle carrying the
cosignature, which verifies against the pinned witness key and fails against any other; the
broker keeps serving that witnessed checkpoint even after newer, unwitnessed ones exist."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from attestation._json import canonical_dumps
from attestation.keys import SigningKey, VerifyKey, load_private_key
from attestation.witness_log import read_witness_log
from qtestbed.cli.demo import ghz_qasm2
from qtestbed.client import Client
from qtestbed.testing import LocalFacility
from tests.integration.audit_kit import (
    WitnessFiles,
    point_profile,
    register_witness,
    witness_once,
)
from tests.integration.support import wait_state


@pytest.fixture
def witnessed(tmp_path: Path) -> Iterator[tuple[LocalFacility, WitnessFiles, Path]]:
    """Broker process with one registered witness and a driver; alice's profile for the CLI."""
    with LocalFacility(tmp_path / "facility") as facility:
        witness = register_witness(facility)
        addresses = facility.start_broker_process()
        facility.start_driver("sim-open")
        facility.wait_available(facility.client("olivia"), "sim-open")
        alice = facility.root / "users" / "alice-cli.toml"
        alice.write_text(
            (facility.root / "users" / "alice.toml")
            .read_text()
            .replace('broker = "127.0.0.1:50051"', f'broker = "{addresses.grpc}"')
        )
        yield facility, point_profile(facility, witness), alice


def _cli(*args: str, profile: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "QTESTBED_PROFILE": str(profile)} if profile else None
    return subprocess.run(
        [sys.executable, "-m", "qtestbed", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def _completed(client: Client, width: int) -> str:
    job = client.submit(ghz_qasm2(width), device_id="sim-open", shots=100).job
    return wait_state(client, job.job_id, "COMPLETED").job_id


def _save(profile: Path, job_id: str, bundle: Path) -> tuple[dict[str, Any], str]:
    """`qtestbed result JOB --save BUNDLE`: the bundle's audit_inclusion and the stderr note."""
    done = _cli("result", job_id, "--save", str(bundle), profile=profile)
    assert done.returncode == 0, done.stdout + done.stderr
    proof: dict[str, Any] = json.loads(bundle.read_text())["audit_inclusion"]
    return proof, done.stderr


def _verify(facility: LocalFacility, bundle: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    done = _cli(
        "receipt",
        "verify",
        str(bundle),
        "--ca",
        str(facility.root / "ca" / "ca.pem"),
        "--audit-key",
        str(facility.root / "broker" / "broker.pem"),
        "--json",
        *extra,
    )
    assert done.returncode in (0, 1), done.stdout + done.stderr
    return done.returncode, json.loads(done.stdout)


def _other_witness_key(tmp: Path) -> Path:
    path = tmp / "other-witness.pub"
    path.write_bytes(SigningKey.generate().public_key.to_pem())
    return path


def _witness_key(witness: WitnessFiles) -> VerifyKey:
    return load_private_key(witness.state / "witness.key").public_key


def test_a_bundle_saved_after_a_witness_cosigned_verifies_against_the_pinned_witness(
    witnessed: tuple[LocalFacility, WitnessFiles, Path], tmp_path: Path
) -> None:
    facility, witness, alice = witnessed
    job_id = _completed(facility.client("alice"), 3)
    pinned = str(witness.state / "witness.pub")

    # Before any witness cosigned: the bundle is unwitnessed and says so; the broker-signed
    # proof still verifies, witnesses unchecked, but requiring a witness fails, saying why.
    early = tmp_path / "early.json"
    proof, note = _save(alice, job_id, early)
    assert proof["witnessed"] is False
    assert proof["cosignatures"] == []
    assert "unwitnessed" in note
    code, verdict = _verify(facility, early)
    assert (code, verdict["audit_inclusion"], verdict["witnesses"]) == (
        0,
        "verified",
        "not checked",
    )
    code, verdict = _verify(facility, early, "--witness-key", pinned)
    assert code == 1
    assert verdict["witnesses"] == "failed"
    assert any("not witnessed by any pinned witness" in p for p in verdict["problems"])
    text = _cli(
        "receipt",
        "verify",
        str(early),
        "--ca",
        str(facility.root / "ca" / "ca.pem"),
        "--audit-key",
        str(facility.root / "broker" / "broker.pem"),
    )
    assert text.returncode == 0
    assert "witnesses not checked" in text.stdout

    # The witness (its own process) cosigns the newest checkpoint, which covers the result.
    done = witness_once(facility, witness)
    assert done.returncode == 0, done.stderr
    log_key = load_private_key(facility.root / "broker" / "broker.key").public_key
    latest = read_witness_log(witness.log, log_key).latest
    assert latest is not None
    assert latest.head.tree_size >= proof["tree_size"]

    # Saving again refreshes the proof: now against the witnessed checkpoint, cosignature in.
    later = tmp_path / "later.json"
    proof, note = _save(alice, job_id, later)
    assert proof["witnessed"] is True
    assert len(proof["cosignatures"]) == 1
    assert proof["tree_size"] == latest.head.tree_size
    assert "witnessed: 1 witness cosignature" in note
    code, verdict = _verify(facility, later, "--witness-key", pinned)
    assert verdict["problems"] == []
    assert code == 0
    assert verdict["witnesses"] == "witnessed"
    assert verdict["witness_key_ids"] == [_witness_key(witness).key_id]

    # Pinning another witness's key: the cosignature the bundle carries does not count.
    other = str(_other_witness_key(tmp_path))
    code, verdict = _verify(facility, later, "--witness-key", other)
    assert code == 1
    assert verdict["witnesses"] == "failed"
    assert any("not witnessed by any pinned witness" in p for p in verdict["problems"])
    # Both pinned and both required: one of two is not enough.
    code, verdict = _verify(
        facility, later, "--witness-key", pinned, "--witness-key", other, "--require-witness", "2"
    )
    assert code == 1
    assert any("witnessed by 1 pinned witness(es), 2 required" in p for p in verdict["problems"])

    # A cosignature edited in the saved bundle (its signature bytes) no longer verifies.
    forged = json.loads(later.read_text())
    envelope = json.loads(base64.b64decode(forged["audit_inclusion"]["cosignatures"][0]))
    envelope["signatures"][0]["sig"] = base64.b64encode(b"\x00" * 64).decode()
    forged["audit_inclusion"]["cosignatures"][0] = base64.b64encode(
        canonical_dumps(envelope)
    ).decode()
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(forged))
    code, verdict = _verify(facility, tampered, "--witness-key", pinned)
    assert code == 1
    assert verdict["witnesses"] == "failed"
    assert any("does not verify" in p for p in verdict["problems"]), verdict["problems"]


def test_the_broker_prefers_the_witnessed_checkpoint_to_newer_unwitnessed_ones(
    witnessed: tuple[LocalFacility, WitnessFiles, Path], tmp_path: Path
) -> None:
    facility, witness, alice = witnessed
    client = facility.client("alice")
    first = _completed(client, 2)
    unwitnessed = client.result_proof(first)  # signs a checkpoint covering it
    assert not unwitnessed.witnessed
    assert witness_once(facility, witness).returncode == 0
    second = _completed(client, 3)
    newer = client.result_proof(second)  # signs a newer checkpoint, not cosigned
    assert not newer.witnessed
    assert newer.tree_size > unwitnessed.tree_size
    again = client.result_proof(first)
    assert again.witnessed
    assert again.tree_size < newer.tree_size
    assert again.tree_size >= unwitnessed.tree_size
    # The CLI's verify takes it with the pinned witness key.
    bundle = tmp_path / "first.json"
    proof, _ = _save(alice, first, bundle)
    assert proof["tree_size"] == again.tree_size
    code, verdict = _verify(facility, bundle, "--witness-key", str(witness.state / "witness.pub"))
    assert code == 0, verdict["problems"]
