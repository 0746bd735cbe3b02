"""`qtestbed audit verify` as an operator runs it, on a real SQLite store of a real facility.

The store is written by the store code and checkpointed with the broker's own key, then edited
with plain SQL the way an attacker with database access (and no key) would.
"""

from __future__ import annotations

import dataclasses
import json
import random
import sqlite3
from pathlib import Path

import pytest

from attestation.keys import load_private_key
from broker.audit.chain import GENESIS_HASH, chain_hash
from broker.audit.checkpointer import AuditCheckpointer
from broker.audit.model import AuditEntry, AuditEvent
from broker.audit.verify import iter_entries
from broker.settings import load_settings
from broker.store import open_store, sqlite_path
from qtestbed.cli.main import main
from qtestbed.facility_init import init_facility
from tests.e2e.console import qtestbed

ENTRIES = 57
EVERY = 10  # checkpoints at 10, 20, ..., 50; seq 51 to 57 are the unprotected tail


@pytest.fixture
def facility(tmp_path: Path) -> Path:
    """A facility whose store holds ENTRIES audit events, checkpointed every EVERY entries."""
    root = init_facility(tmp_path / "fac")
    settings = load_settings(root / "broker.toml")
    store = open_store(settings.store)
    if not callable(getattr(store, "checkpoints", None)) or not callable(
        getattr(store, "add_checkpoint", None)
    ):
        store.close()
        pytest.skip("SqliteStore has no add_checkpoint/checkpoints yet (RegistryStore)")
    try:
        store.migrate()
        checkpointer = AuditCheckpointer(load_private_key(settings.server_key))
        for i in range(1, ENTRIES + 1):
            event = AuditEvent(
                kind="attestation.passed",  # not a job entry: no jobs rows here
                actor=f"user{i % 3}",
                subject=f"job-{i}",
                at=1e9 + i,
                detail={"shots": i * 10, "device": "sim-open"},
            )
            store.append_audit(event)
            checkpointer.feed(iter_entries(store, after_seq=checkpointer.last_seq))
            if i % EVERY == 0:
                store.add_checkpoint(checkpointer.make(1e9 + i))
    finally:
        store.close()
    return root / "broker.toml"


def _db(config: Path) -> sqlite3.Connection:
    return sqlite3.connect(sqlite_path(load_settings(config).store))


def _rows(config: Path) -> list[AuditEntry]:
    store = open_store(load_settings(config).store)
    try:
        return list(iter_entries(store))
    finally:
        store.close()


def test_an_intact_log_verifies(facility: Path) -> None:
    done = qtestbed("audit", "verify", "--config", str(facility))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"audit log OK: {ENTRIES} entries, 5 checkpoints checked")
    assert "seq 1 to seq 50 match a signed checkpoint" in done.stdout
    assert "7 entries after the last checkpoint" in done.stdout


def test_json_output(facility: Path) -> None:
    done = qtestbed("audit", "verify", "--config", str(facility), "--json")
    assert done.returncode == 0, done.stderr
    verdict = json.loads(done.stdout)
    assert verdict["ok"] is True
    assert verdict["entries_checked"] == ENTRIES
    assert verdict["checkpoints_checked"] == 5
    assert verdict["unprotected_tail"] == ENTRIES - 50


def test_an_sql_edit_is_named(facility: Path) -> None:
    with _db(facility) as db:
        db.execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = 23")
    done = qtestbed("audit", "verify", "--config", str(facility), "--json")
    assert done.returncode == 1, done.stderr
    verdict = json.loads(done.stdout)
    assert verdict["first_bad_seq"] == 23
    assert any("seq 23 was changed" in p for p in verdict["problems"])


def test_a_deleted_row_is_named(facility: Path) -> None:
    with _db(facility) as db:
        db.execute("DELETE FROM audit_log WHERE seq = 31")
    done = qtestbed("audit", "verify", "--config", str(facility))
    assert done.returncode == 1
    assert "first bad entry seq 31" in done.stdout
    assert "seq 31 is missing" in done.stdout


def test_a_rewrite_with_the_chain_recomputed_is_bounded(facility: Path) -> None:
    entries = _rows(facility)
    prev = GENESIS_HASH
    with _db(facility) as db:
        for entry in entries:
            event = entry.event
            if entry.seq == 34:
                event = dataclasses.replace(event, actor="mallory")
            entry_hash = chain_hash(prev, entry.seq, event)
            db.execute(
                "UPDATE audit_log SET actor = ?, prev_hash = ?, entry_hash = ? WHERE seq = ?",
                (event.actor, prev, entry_hash, entry.seq),
            )
            prev = entry_hash
    done = qtestbed("audit", "verify", "--config", str(facility))
    assert done.returncode == 1
    assert "first bad entry seq 31" in done.stdout
    assert "the first change lies between seq 31 and seq 40" in done.stdout
    assert "checkpoint #4 (tree size 40" in done.stdout


def test_truncation_below_a_checkpoint_is_caught(facility: Path) -> None:
    with _db(facility) as db:
        db.execute("DELETE FROM audit_log WHERE seq > 45")
    done = qtestbed("audit", "verify", "--config", str(facility))
    assert done.returncode == 1
    assert "entries after seq 45 are missing" in done.stdout


def test_cannot_run_without_the_store_or_the_settings(facility: Path, tmp_path: Path) -> None:
    sqlite_path(load_settings(facility).store).unlink()
    done = qtestbed("audit", "verify", "--config", str(facility))
    assert done.returncode == 2
    assert "no SQLite store at" in done.stderr
    done = qtestbed("audit", "verify", "--config", str(tmp_path / "absent.toml"))
    assert done.returncode == 2
    assert "cannot read broker settings" in done.stderr


def _tamper(db: sqlite3.Connection, rng: random.Random, facility: Path) -> tuple[str, int]:
    """One random tampering an attacker with SQL access (no key) could do; returns its seq."""
    seq = rng.randint(2, ENTRIES - 1)
    kind = rng.choice(["edit", "delete", "swap", "insert"])
    if kind == "edit":
        db.execute(
            "UPDATE audit_log SET detail = replace(detail, '\"shots\":', '\"shots\":9') "
            "WHERE seq = ?",
            (seq,),
        )
    elif kind == "delete":
        db.execute("DELETE FROM audit_log WHERE seq = ?", (seq,))
    elif kind == "swap":
        db.execute("UPDATE audit_log SET seq = -1 WHERE seq = ?", (seq,))
        db.execute("UPDATE audit_log SET seq = ? WHERE seq = ?", (seq, seq + 1))
        db.execute("UPDATE audit_log SET seq = ? WHERE seq = -1", (seq + 1,))
    else:
        for later in range(ENTRIES, seq - 1, -1):
            db.execute("UPDATE audit_log SET seq = ? WHERE seq = ?", (later + 1, later))
        prev = db.execute("SELECT entry_hash FROM audit_log WHERE seq = ?", (seq - 1,)).fetchone()
        forged = AuditEvent(kind="device.released", actor="mallory", subject="sim-open", at=1e9)
        db.execute(
            "INSERT INTO audit_log (seq, kind, actor, subject, at, detail, prev_hash, entry_hash)"
            " VALUES (?, ?, ?, ?, ?, '{}', ?, ?)",
            (
                seq,
                forged.kind,
                forged.actor,
                forged.subject,
                forged.at,
                prev[0],
                chain_hash(prev[0], seq, forged),
            ),
        )
    return kind, seq


@pytest.mark.parametrize("seed", range(16))
def test_random_tampering_is_detected_and_the_first_bad_entry_named(
    facility: Path, seed: int, capsys: pytest.CaptureFixture[str]
) -> None:
    with _db(facility) as db:
        kind, seq = _tamper(db, random.Random(seed), facility)
    code = main(["audit", "verify", "--config", str(facility), "--json"])
    verdict = json.loads(capsys.readouterr().out)
    assert code == 1, (kind, seq, verdict)
    assert verdict["ok"] is False
    assert verdict["first_bad_seq"] == seq, (kind, verdict["problems"])


def test_a_malformed_row_is_a_named_bad_entry_and_json_is_printed(facility: Path) -> None:
    with _db(facility) as db:
        db.execute("UPDATE audit_log SET detail = '{\"shots\": ' WHERE seq = 12")
        db.execute("UPDATE audit_log SET actor = CAST(X'ff00' AS TEXT) WHERE seq = 14")
    done = qtestbed("audit", "verify", "--config", str(facility), "--json")
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    verdict = json.loads(done.stdout)
    assert verdict["ok"] is False
    assert verdict["first_bad"] == 12
    malformed = {f["seq"]: f["message"] for f in verdict["findings"] if f["kind"] == "malformed"}
    assert "its detail is not JSON" in malformed[12]
    assert "its actor is not valid UTF-8" in malformed[14]
    text = qtestbed("audit", "verify", "--config", str(facility))
    assert text.returncode == 1
    assert "first bad entry seq 12" in text.stdout


def test_zero_checkpoints_fail(facility: Path) -> None:
    with _db(facility) as db:
        db.execute("DELETE FROM audit_checkpoints")
    done = qtestbed("audit", "verify", "--config", str(facility), "--json")
    assert done.returncode == 1, done.stderr
    verdict = json.loads(done.stdout)
    assert [f["kind"] for f in verdict["findings"]] == ["no_checkpoints"]
    assert verdict["checkpoints"] == 0


def test_a_checkpoint_older_than_the_interval_with_entries_after_it_fails(facility: Path) -> None:
    # The fixture's entries are one second apart and checkpointed every 10; the broker signs
    # every 60 s by default. Entries written long after the last checkpoint, with none after:
    with _db(facility) as db:
        db.execute("DELETE FROM audit_checkpoints WHERE tree_size > 30")
        db.execute("UPDATE audit_log SET at = at + 600 WHERE seq > 40")
    entries = _rows(facility)
    prev = entries[39].entry_hash
    with _db(facility) as db:
        for entry in entries[40:]:
            entry_hash = chain_hash(prev, entry.seq, entry.event)
            db.execute(
                "UPDATE audit_log SET prev_hash = ?, entry_hash = ? WHERE seq = ?",
                (prev, entry_hash, entry.seq),
            )
            prev = entry_hash
    done = qtestbed("audit", "verify", "--config", str(facility), "--json")
    assert done.returncode == 1, done.stderr
    verdict = json.loads(done.stdout)
    assert [f["kind"] for f in verdict["findings"]] == ["stale_checkpoint"]
    assert verdict["first_bad"] == 31


def test_cannot_verify_still_prints_a_verdict_with_json(facility: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no-witness.jsonl"
    done = qtestbed(
        "audit", "verify", "--config", str(facility), "--json", "--witness", str(missing)
    )
    assert done.returncode == 2
    verdict = json.loads(done.stdout)
    assert verdict["ok"] is False
    assert "cannot read witness file" in verdict["cannot_verify"]
    sqlite_path(load_settings(facility).store).unlink()
    done = qtestbed("audit", "verify", "--config", str(facility), "--json")
    assert done.returncode == 2
    assert "no SQLite store at" in json.loads(done.stdout)["cannot_verify"]
