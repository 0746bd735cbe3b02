"""Secret files (private keys, link secrets): owner-only from the first byte, whole or absent.

Every writer of a secret in this code base goes through `write_secret`. The bytes go to a
temporary file in the same folder, created by `os.open(O_CREAT | O_EXCL, 0o600)`, so under
any umask its mode is 0600 or narrower from the moment it exists and nobody else can open
it; they are synced, then the file takes its final name by rename (or hard link, when an
existing file must not be replaced), and the folder is synced so the name survives a crash.
Nothing is ever chmod-ed after the fact: a file created with the umask and narrowed later can
be opened by another user in between, and that open descriptor outlives the chmod.

Standard library only: the driver link's key writer (`qtestbed.shared.linkkeys`) uses it too.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from pathlib import Path

SECRET_MODE = 0o600
PUBLIC_MODE = 0o644
PRIVATE_DIR_MODE = 0o700
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)


def temporary_name(path: Path) -> Path:
    """Where `write_secret` stages `path`: same folder (so the rename is atomic), hidden."""
    return path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")


def write_secret(path: Path, data: bytes, *, replace: bool = True) -> None:
    """Write `data` to `path`, readable and writable by its owner only.

    With `replace`, an existing file is replaced atomically (readers see the old or the new
    secret, never a mix). Without it, FileExistsError if `path` exists (or appears meanwhile):
    for a key someone is about to depend on, which must never be overwritten.
    """
    tmp = temporary_name(path)
    fd = os.open(tmp, _CREATE, SECRET_MODE)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if `path` exists: never replaces a key
            tmp.unlink()
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    sync_folder(path.parent)


def write_public(path: Path, data: bytes) -> None:
    """Write a public file (certificate, public key, settings) whole, replacing any old one
    atomically: readable by all, writable by its owner only (0644), whatever the umask. A
    public key in the driver link's authorised folder that others could write would let them
    authorise their own."""
    tmp = temporary_name(path)
    fd = os.open(tmp, _CREATE, PUBLIC_MODE)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    sync_folder(path.parent)


def move_secret(source: Path, target: Path) -> None:
    """Move a secret file to `target` (which must not exist), never widening its mode.

    A rename keeps the file (and its mode) as it is; across file systems the bytes are written
    again through `write_secret` and the source removed only once the copy is on disk.
    """
    if target.exists():
        raise FileExistsError(errno.EEXIST, "will not replace an existing key file", str(target))
    try:
        os.rename(source, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        write_secret(target, source.read_bytes(), replace=False)
        source.unlink()
    sync_folder(target.parent)
    sync_folder(source.parent)


def private_folder(path: Path) -> Path:
    """Create `path` (and its parents) with the last folder owner-only (0700 under any umask:
    the umask can only narrow it); an existing folder is left as it is."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=PRIVATE_DIR_MODE)
    return path


def sync_folder(folder: Path) -> None:
    """fsync a folder, so a rename or new name in it survives a crash (best effort where the
    platform cannot open folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
