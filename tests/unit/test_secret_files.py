"""Every writer of a secret creates it 0600 from the first byte, under a permissive umask.

The processes here run with umask 0, so a file created any other way than with an explicit
owner-only mode would be world-readable. Two things are checked for each writer: each private
key or link secret it leaves is 0600, and no such file was ever opened for writing under its
final name: every one went through `write_secret`'s temporary file, which `os.open` created
with O_EXCL and mode 0600 (seen by wrapping `os.open`; the `open` audit event shows any
other way a file was opened for writing).
"""

from __future__ import annotations

import datetime as dt
import os
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from attestation.keys import KeyKind, SigningKey, create_private_key_file, save_private_key
from attestation.secretfile import move_secret, write_secret
from qtestbed.credential_files import write_request
from qtestbed.facility_init import init_facility
from qtestbed.facility_upgrade import upgrade_facility
from qtestbed.shared.linkkeys import create_keypair
from tests.old_facility import make_old_style

_WRITING = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


@dataclass
class Watch:
    """What was opened for writing beneath `folder`: (path, flags, creation mode)."""

    folder: Path
    created: list[tuple[Path, int, int]] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)  # opened for writing, any way
    active: bool = True

    def note_os_open(self, path: Any, flags: int, mode: int) -> None:
        p = Path(os.fsdecode(path)).absolute()
        if self.active and p.is_relative_to(self.folder) and flags & os.O_CREAT:
            self.created.append((p, flags, mode))

    def note_audit(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.active or event != "open" or not args or args[0] is None:
            return
        if isinstance(args[0], int):
            return  # an open file descriptor being wrapped
        p = Path(os.fsdecode(args[0])).absolute()
        mode, flags = args[1], args[2]
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & _WRITING
        )
        if writing and p.is_relative_to(self.folder):
            self.written.append(p)


_WATCHES: list[Watch] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    for watch in _WATCHES:
        watch.note_audit(event, args)


sys.addaudithook(_audit)  # audit hooks cannot be removed: it acts only while a watch is on


class Watching:
    """Watch what is written beneath `folder`, with umask 0 while on."""

    def __init__(self, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.watch = Watch(folder.absolute())
        self.monkeypatch = monkeypatch
        self.umask = 0

    def __enter__(self) -> Watch:
        real_open, w = os.open, self.watch

        def spy(path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
            w.note_os_open(path, flags, mode)
            return real_open(path, flags, mode, dir_fd=dir_fd)

        self.monkeypatch.setattr(os, "open", spy)
        self.umask = os.umask(0)
        _WATCHES.append(w)
        return w

    def __exit__(self, *exc: object) -> None:
        self.watch.active = False
        _WATCHES.remove(self.watch)
        os.umask(self.umask)
        self.monkeypatch.undo()


@pytest.fixture
def watch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Watch]:
    with Watching(tmp_path, monkeypatch) as w:
        yield w


def secrets_in(folder: Path) -> list[Path]:
    """Private keys (PEM) and CurveZMQ secret certificates beneath `folder`, found by content."""
    found = []
    for path in folder.rglob("*"):
        if path.is_file() and not path.name.endswith(".tmp"):
            data = path.read_bytes()
            if b"PRIVATE KEY" in data or b"secret-key" in data:
                found.append(path.absolute())
    return sorted(found)


def _stages(temporary: Path, target: Path) -> bool:
    """Whether `temporary` is one of write_secret's temporary files for `target`."""
    return temporary.parent == target.parent and temporary.name.startswith(f".{target.name}.")


def assert_created_owner_only(watch: Watch, expected: int) -> None:
    secrets = secrets_in(watch.folder)
    assert len(secrets) == expected, secrets
    for path in secrets:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        # Never opened for writing (or created) under its own name...
        assert path not in watch.written, f"{path} was written in place"
        assert path not in [p for p, _, _ in watch.created], f"{path} was created in place"
    # ...only through temporary files created exclusively, owner-only, beside their target.
    staged = [(p, f, m) for p, f, m in watch.created if p.name.endswith(".tmp")]
    for path in secrets:
        mine = [(f, m) for p, f, m in staged if _stages(p, path)]
        assert mine, f"{path} was not staged by write_secret"
        assert all(f & os.O_EXCL and m == 0o600 for f, m in mine), (path, mine)


def test_write_secret_creates_0600_via_an_exclusive_temporary_file(watch: Watch) -> None:
    target = watch.folder / "a.key"
    write_secret(target, b"-----BEGIN PRIVATE KEY-----\n")
    write_secret(target, b"-----BEGIN PRIVATE KEY----- again\n")  # replaces atomically
    assert target.read_bytes().endswith(b"again\n")
    assert_created_owner_only(watch, expected=1)
    assert [p.name for p in watch.folder.iterdir()] == ["a.key"]  # no temporary file left


def test_write_secret_without_replace_never_overwrites(watch: Watch) -> None:
    target = watch.folder / "mine.key"
    write_secret(target, b"PRIVATE KEY 1", replace=False)
    with pytest.raises(FileExistsError):
        write_secret(target, b"PRIVATE KEY 2", replace=False)
    assert target.read_bytes() == b"PRIVATE KEY 1"
    assert [p.name for p in watch.folder.iterdir()] == ["mine.key"]


def test_moving_a_secret_keeps_it_owner_only(watch: Watch) -> None:
    source = watch.folder / "ca.key"
    write_secret(source, b"PRIVATE KEY")
    (watch.folder / "elsewhere").mkdir()
    target = watch.folder / "elsewhere" / "ca.key"
    move_secret(source, target)
    assert not source.exists()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.absolute() not in watch.written
    with pytest.raises(FileExistsError):
        move_secret(watch.folder / "elsewhere" / "ca.key", watch.folder / "elsewhere" / "ca.key")


def test_attestation_key_writers(watch: Watch) -> None:
    key = SigningKey.generate(KeyKind.ED25519)
    save_private_key(key, watch.folder / "device.key")
    create_private_key_file(key, watch.folder / "researcher.key")
    assert_created_owner_only(watch, expected=2)


def test_link_keypair(watch: Watch) -> None:
    public, secret = create_keypair(watch.folder / "link", "broker")
    assert_created_owner_only(watch, expected=1)
    assert secrets_in(watch.folder) == [secret.absolute()]
    # The public half is readable by all but writable only by its owner, umask or not.
    assert stat.S_IMODE(public.stat().st_mode) == 0o644


def test_credential_request(watch: Watch) -> None:
    files = write_request(
        "carol", facility_id="demo", out=watch.folder / "carol", broker="b:1", ca_cert=None
    )
    assert_created_owner_only(watch, expected=1)
    assert secrets_in(watch.folder) == [files.key.absolute()]


def test_init_writes_every_key_owner_only_and_the_ca_keys_outside(watch: Watch) -> None:
    root = watch.folder / "fac"
    init_facility(root)
    # broker TLS, 7 users, 2 devices, 3 link secrets; 3 CA keys in the offline folder.
    assert_created_owner_only(watch, expected=16)
    assert not [p for p in secrets_in(root) if "ca" in p.stem.split("-")]
    offline = watch.folder / "fac-offline-ca"
    assert sorted(p.name for p in secrets_in(offline)) == [
        "ca.key",
        "clients-ca.key",
        "devices-ca.key",
    ]
    assert stat.S_IMODE(offline.stat().st_mode) == 0o700
    # Nothing init wrote is writable by others (link/clients/ decides who may connect).
    writable = [p for p in watch.folder.rglob("*") if p.stat().st_mode & 0o022]
    assert writable == []


def test_upgrade_writes_the_new_ca_keys_outside_owner_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "old" / "fac"
    init_facility(root)
    make_old_style(root)
    with Watching(tmp_path, monkeypatch) as watch:
        report = upgrade_facility(root, now=dt.datetime.now(dt.UTC))
    offline = report.offline_ca.absolute()
    assert sorted(p.name for p in secrets_in(offline)) == [
        "ca.key",
        "clients-ca.key",
        "devices-ca.key",
    ]
    for name in ("clients-ca.key", "devices-ca.key"):  # written by the upgrade
        path = offline / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path not in watch.written
        staged = [(f, m) for p, f, m in watch.created if _stages(p, path)]
        assert staged
        assert all(f & os.O_EXCL and m == 0o600 for f, m in staged)
    assert not list((root / "ca").glob("*.key"))
