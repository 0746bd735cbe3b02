"""Confinement of the circuit-decoder child: what it may still reach once it serves payloads.

The child parses hostile bytes with large native parsers; if one is ever turned into code
execution, that code runs as the broker's user. Before the child reads its first payload it:

- drops its environment (`os.environ` cleared: a store DSN or a token there is gone from the
  variables; the bytes the process started with stay in its own memory, so keep secrets out of
  the broker's environment) and moves to `/`;
- closes every file descriptor it inherited except standard input, output and error and its
  pipe to the broker;
- with Landlock (Linux 5.13 or later, enabled in the kernel's LSM list), restricts itself for
  good (no_new_privs, then landlock_restrict_self: no way back, root included) to reading and
  mapping files beneath the Python installation's library folders (standard library,
  site-packages), the `qtestbed` package's own source and the system library folders, plus
  /dev/null and /dev/urandom. Nothing else can be read or listed: not the facility folder,
  not /etc, not /proc, not any key file. Nothing at all can be written, created, removed or
  renamed. Where the kernel offers it, it can neither bind nor connect TCP sockets (ABI 4),
  nor reach abstract Unix sockets or signal processes outside itself (ABI 6).

Without Landlock (an older kernel, or one built or booted without it) only the first two
steps apply and the child can read whatever the broker's user can: `confine` says so, the
decoder logs it at start, and the broker must then hold no key beyond its own (its TLS and
link keys) readable by its user. Run the broker as its own unprivileged user in any case.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import sysconfig
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# Landlock system calls (the same numbers on every architecture that has them).
_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

_EXECUTE, _READ_FILE, _READ_DIR = 1 << 0, 1 << 2, 1 << 3
_FS_ABI1 = (1 << 13) - 1  # execute, write, read, readdir, remove*, make* (ABI 1)
_FS_REFER, _FS_TRUNCATE, _FS_IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15  # ABI 2, 3, 5
_NET_TCP = (1 << 0) | (1 << 1)  # bind, connect (ABI 4)
_SCOPE_ALL = (1 << 0) | (1 << 1)  # abstract Unix sockets, signals (ABI 6)

_SYSTEM_LIBRARIES = ("/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/local/lib")
_DEVICES = ("/dev/null", "/dev/urandom")


class _RulesetAttr(ctypes.Structure):
    _fields_ = (
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    )


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


@dataclass(frozen=True, kw_only=True, slots=True)
class Confinement:
    """What `confine` achieved: the Landlock ABI in force (0: none) and, if none, why."""

    landlock_abi: int
    problem: str = ""

    def describe(self) -> str:
        if self.landlock_abi:
            return f"landlock ABI {self.landlock_abi}: reads limited to Python's libraries"
        return f"no landlock ({self.problem}): reads everything the broker's user can"


def readable_paths() -> list[Path]:
    """The folders (and devices) the confined child may read: Python's libraries, the
    qtestbed package, the system libraries."""
    paths = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    paths |= {str(Path(p) / "lib") for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    paths.add(str(Path(__file__).resolve().parents[2]))  # the qtestbed package
    paths.update(_SYSTEM_LIBRARIES)
    paths.update(_DEVICES)
    return sorted(Path(p) for p in paths if Path(p).exists())


def confine(keep_fds: Iterable[int], readable: Iterable[Path] | None = None) -> Confinement:
    """Confine this process for good (see the module docstring); call it once, in the child."""
    os.environ.clear()
    os.chdir("/")
    _close_inherited(set(keep_fds) | {0, 1, 2})
    return _landlock(readable_paths() if readable is None else list(readable))


def _close_inherited(keep: set[int]) -> None:
    try:
        open_fds = sorted(int(n) for n in os.listdir("/proc/self/fd"))
    except OSError:
        open_fds = list(range(3, 1024))
    for fd in open_fds:
        if fd not in keep:
            with contextlib.suppress(OSError):  # the one listdir used is gone already
                os.close(fd)


def _landlock(readable: list[Path]) -> Confinement:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    abi = libc.syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), _CREATE_RULESET_VERSION)
    if abi < 0:
        return Confinement(landlock_abi=0, problem=os.strerror(ctypes.get_errno()))
    attr, size = _ruleset(abi)
    ruleset = libc.syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), 0)
    if ruleset < 0:
        return Confinement(landlock_abi=0, problem=os.strerror(ctypes.get_errno()))
    try:
        for path in readable:
            _allow_reading(libc, ruleset, path)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return Confinement(landlock_abi=0, problem=os.strerror(ctypes.get_errno()))
        if libc.syscall(_SYS_RESTRICT_SELF, ruleset, 0) != 0:
            return Confinement(landlock_abi=0, problem=os.strerror(ctypes.get_errno()))
    finally:
        os.close(ruleset)
    return Confinement(landlock_abi=abi)


def _ruleset(abi: int) -> tuple[_RulesetAttr, int]:
    """Every access right this ABI knows is handled, so all of them are denied by default."""
    fs = _FS_ABI1
    fs |= _FS_REFER if abi >= 2 else 0
    fs |= _FS_TRUNCATE if abi >= 3 else 0
    fs |= _FS_IOCTL_DEV if abi >= 5 else 0
    net = _NET_TCP if abi >= 4 else 0
    scoped = _SCOPE_ALL if abi >= 6 else 0
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8  # the struct as this kernel knows it
    return _RulesetAttr(handled_access_fs=fs, handled_access_net=net, scoped=scoped), size


def _allow_reading(libc: ctypes.CDLL, ruleset: int, path: Path) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return
    try:
        access = _READ_FILE | _EXECUTE | (_READ_DIR if path.is_dir() else 0)
        rule = _PathBeneathAttr(allowed_access=access, parent_fd=fd)
        if libc.syscall(_SYS_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), 0) != 0:
            raise OSError(ctypes.get_errno(), f"landlock rule for {path}")
    finally:
        os.close(fd)
