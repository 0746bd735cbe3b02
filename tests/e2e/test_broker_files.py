"""The broker's own files, as `qtestbed broker` runs: it refuses to start where it can read a
CA private key (named, with what to do, and without opening it), and the store it creates
under a permissive umask (umask 000, as outside systemd) is owner-only with its -wal and -shm.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from tests.e2e.console import qtestbed
from tests.e2e.processes import OpenLog, running


def init(tmp_path: Path) -> Path:
    root = tmp_path / "fac"
    done = qtestbed("init", str(root))
    assert done.returncode == 0, done.stderr
    return root


@pytest.mark.parametrize(
    ("key", "placed"),
    [
        ("ca.key", "ca/ca.key"),  # where an older init left it
        ("clients-ca.key", "ca/clients-ca.key"),
        ("devices-ca.key", "backup/devices-ca.key"),  # a subfolder of the broker's folder
        ("ca.key", "broker/ca.key"),
    ],
)
def test_the_broker_refuses_to_start_beside_a_readable_ca_key(
    tmp_path: Path, key: str, placed: str
) -> None:
    root = init(tmp_path)
    target = root / placed
    target.parent.mkdir(exist_ok=True)
    shutil.copy(tmp_path / "fac-offline-ca" / key, target)
    opened = OpenLog(tmp_path / "open-log")
    done = qtestbed(
        "broker",
        "--config",
        str(root / "broker.toml"),
        "--listen",
        "127.0.0.1:0",
        "--link-listen",
        "tcp://127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        env=opened.env,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"CA private key readable by the broker: {target}" in done.stderr
    assert "Move the CA keys to the operator's offline CA folder" in done.stderr
    assert not (root / "broker.db").exists()  # refused before it opened its store
    paths = opened.opened()
    assert root.resolve() / "broker.toml" in paths  # the log works
    assert target.resolve() not in paths  # recognised by name: never opened


def test_the_store_is_owner_only_under_a_permissive_umask(tmp_path: Path) -> None:
    root = init(tmp_path)
    for processes in running(root):
        old = os.umask(0)  # inherited by the broker process
        try:
            broker = processes.broker()
        finally:
            os.umask(old)
        db = root / "broker.db"
        files = {p.name: stat.S_IMODE(p.stat().st_mode) for p in root.glob("broker.db*")}
        assert files == {"broker.db": 0o600, "broker.db-wal": 0o600, "broker.db-shm": 0o600}
        assert db.exists()
        assert processes.stop(broker) == 0
