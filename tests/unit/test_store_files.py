"""The SQLite store (circuits, results, principals' personal data) and its -wal and -shm files
are owner-only from creation, under a permissive umask; an older store others could read is
narrowed when the broker opens it."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.store.sqlite import SqliteStore


@pytest.fixture
def permissive() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def modes(db: Path) -> dict[str, int]:
    files = (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm"))
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in files if p.exists()}


def test_a_new_store_and_its_wal_and_shm_are_0600(tmp_path: Path, permissive: None) -> None:
    db = tmp_path / "broker.db"
    store = SqliteStore(db)
    try:
        store.migrate()  # writes: SQLite creates the -wal and -shm files now
        assert modes(db) == {"broker.db": 0o600, "broker.db-wal": 0o600, "broker.db-shm": 0o600}
    finally:
        store.close()


def test_an_older_store_others_can_read_is_narrowed(
    tmp_path: Path, permissive: None, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "broker.db"
    store = SqliteStore(db)
    store.migrate()
    store.close()
    for path in tmp_path.iterdir():
        path.chmod(0o644)  # as an older broker left it outside systemd
    store = SqliteStore(db)
    try:
        store.migrate()
        assert set(modes(db).values()) == {0o600}
    finally:
        store.close()
    assert f"store file {db} was readable by others (mode 0o644); made it 0600" in caplog.text
