"""A broker process started on a store whose audit log is damaged refuses to start with one
clear sentence: the first bad entry, and what to do (verify, restore from a backup). Never a
traceback, and never a broker that runs on, signing nothing."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from qtestbed.testing import LocalFacility
from tests.integration.audit_kit import stop_broker

DAMAGE = {
    "malformed_json": "UPDATE audit_log SET detail = '{\"oops' WHERE seq = 4",
    "invalid_utf8": "UPDATE audit_log SET subject = CAST(X'c328' AS TEXT) WHERE seq = 4",
    "edited_entry": "UPDATE audit_log SET actor = 'mallory' WHERE seq = 4",
    # Below the shutdown checkpoint, which covers every entry: seq 4 onwards are gone.
    "truncated": "DELETE FROM audit_log WHERE seq >= 4",
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_the_broker_names_the_first_bad_entry_and_what_to_do(tmp_path: Path, damage: str) -> None:
    with LocalFacility(tmp_path / "facility") as facility:
        facility.start_broker_process()  # seeds the store: dozens of audit entries
        stop_broker(facility)
        with closing(sqlite3.connect(facility.root / "broker.db")) as db:
            db.execute(DAMAGE[damage])
            db.commit()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "qtestbed",
                "broker",
                "--config",
                str(facility.root / "broker.toml"),
                "--listen",
                "127.0.0.1:0",
                "--link-listen",
                "tcp://127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "ready" not in done.stdout
    assert (
        "broker cannot start: the audit log in the store is damaged (first bad entry seq 4)"
        in done.stderr
    )
    assert "qtestbed audit verify --config" in done.stderr
    assert "restore the database from a backup" in done.stderr
