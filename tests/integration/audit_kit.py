"""Helpers for the audit witness and tampering tests: a registered witness run as its own
process, a broker's store copied and restored, checkpoints read over the audit service."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from attestation.keys import SigningKey, create_private_key_file
from qtestbed.client import Client
from qtestbed.testing import LocalFacility, eventually
from qtestbed.v1 import admin_pb2


@dataclass(frozen=True, kw_only=True, slots=True)
class WitnessFiles:
    name: str
    state: Path
    profile: Path  # a copy of a security principal's profile, pointing at the running broker

    @property
    def log(self) -> Path:
        return self.state / "witness.jsonl"


def register_witness(facility: LocalFacility, name: str = "sec-witness") -> WitnessFiles:
    """Make a witness key (as the security team would) and register its public key in
    broker.toml's [witnesses] (as the operator would). Call before the broker starts."""
    state = facility.root.parent / f"witness-{name}"
    state.mkdir(mode=0o700)
    key = SigningKey.generate()
    create_private_key_file(key, state / "witness.key")
    (state / "witness.pub").write_bytes(key.public_key.to_pem())
    config = facility.root / "broker.toml"
    text = config.read_text()
    section = f'[witnesses]\n{name} = "{state / "witness.pub"}"\n\n'
    # Before [timing]: LocalFacility rewrites everything from [timing] on.
    text = (
        text.replace("[timing]", section + "[timing]", 1) if "[timing]" in text else text + section
    )
    config.write_text(text)
    return WitnessFiles(name=name, state=state, profile=facility.root / "users" / "sean.toml")


def point_profile(facility: LocalFacility, witness: WitnessFiles) -> WitnessFiles:
    """A copy of sean's (security) profile that names the broker's real address."""
    assert facility.addresses is not None
    source = facility.root / "users" / "sean.toml"
    text = source.read_text().replace(
        'broker = "127.0.0.1:50051"', f'broker = "{facility.addresses.grpc}"'
    )
    target = facility.root / "users" / "sean-witness.toml"
    target.write_text(text)
    return WitnessFiles(name=witness.name, state=witness.state, profile=target)


def witness_command(facility: LocalFacility, witness: WitnessFiles, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "qtestbed",
        "audit",
        "witness",
        "--state",
        str(witness.state),
        "--log-cert",
        str(facility.root / "broker" / "broker.pem"),
        "--profile",
        str(witness.profile),
        *extra,
    ]


def witness_once(
    facility: LocalFacility, witness: WitnessFiles
) -> subprocess.CompletedProcess[str]:
    """One poll of the witness, as its own process."""
    return subprocess.run(
        witness_command(facility, witness, "--once", "--metrics-listen", ""),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


class RunningWitness:
    """The witness as a long-running process with its own /metrics."""

    def __init__(self, facility: LocalFacility, witness: WitnessFiles) -> None:
        cmd = witness_command(
            facility, witness, "--interval", "0.3", "--metrics-listen", "127.0.0.1:0"
        )
        self.stderr_path = witness.state / "witness.log"
        self._stderr = open(self.stderr_path, "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        assert line.startswith("qtestbed witness ready "), line + self.stderr_path.read_text()
        self.metrics = str(json.loads(line.removeprefix("qtestbed witness ready "))["metrics"])

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(30)
        self._stderr.close()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code


def checkpoints(client: Client) -> list[admin_pb2.Checkpoint]:
    reply = client.call(client.audit.ListCheckpoints, admin_pb2.ListCheckpointsRequest())
    return list(reply.checkpoints)


def wait_checkpoint_beyond(client: Client, size: int) -> admin_pb2.Checkpoint:
    """The newest checkpoint, once one covers more than `size` entries."""

    def newer() -> admin_pb2.Checkpoint | None:
        found = checkpoints(client)
        return found[-1] if found and found[-1].tree_size > size else None

    return eventually(newer, timeout=60, what=f"a checkpoint beyond tree size {size}")


def copy_store(facility: LocalFacility, target: Path) -> Path:
    """A consistent copy of the SQLite store, taken with SQLite's backup API (safe while the
    broker runs: it sees one committed state)."""
    db = facility.root / "broker.db"
    with closing(sqlite3.connect(db)) as source, closing(sqlite3.connect(target)) as copy:
        source.backup(copy)
    return target


def restore_store(facility: LocalFacility, source: Path) -> None:
    """Put a copy back as the broker's store (the broker must be stopped)."""
    db = facility.root / "broker.db"
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(source, db)


def stop_broker(facility: LocalFacility) -> None:
    proc = facility.broker_process
    assert proc is not None
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, (facility.root / "broker.log").read_text()[-3000:]
    facility.broker_process = None
