"""A circuit-decoder child that, once confined exactly as the broker's is (`prepare_child`),
tries what code run by a hostile payload would try: read key files, list the facility, write,
connect out. Its answers travel back over the decoder's own pipe; then it decodes as usual."""

from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import socket
from collections.abc import Callable
from functools import partial
from multiprocessing.connection import Connection

from qtestbed.shared.circuits import IsolatedDecoder
from qtestbed.shared.circuits.isolated import _READY, _serve, prepare_child


class ProbingDecoder(IsolatedDecoder):
    def _child_target(self) -> Callable[[Connection, int], None]:
        return probe_child

    def probe(self, request: dict[str, object]) -> dict[str, str]:
        with self._lock:
            conn = self._ensure_child()
            conn.send_bytes(json.dumps(request).encode())
            answer: dict[str, str] = json.loads(conn.recv_bytes())
            return answer


def kernel_landlock_abi() -> int:
    """The kernel's Landlock ABI (0: none), asked directly rather than through the code under
    test, so a confinement that silently stopped working fails the tests instead of skipping."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    abi = int(libc.syscall(444, None, ctypes.c_size_t(0), 1))  # landlock_create_ruleset
    return max(abi, 0)


def probe_child(conn: Connection, memory_bytes: int) -> None:
    confinement = prepare_child(conn, memory_bytes)  # what the broker's child runs
    conn.send_bytes(_READY + json.dumps(dataclasses.asdict(confinement)).encode())
    request = json.loads(conn.recv_bytes())
    answer = {f"read {p}": _attempt(partial(_read, p)) for p in request["read"]}
    answer |= {f"list {p}": _attempt(partial(os.listdir, p)) for p in request["list"]}
    answer |= {f"write {p}": _attempt(partial(_create, p)) for p in request["write"]}
    port = int(request["connect"])
    answer["connect"] = _attempt(lambda: socket.create_connection(("127.0.0.1", port), 5).close())
    answer["environ"] = json.dumps(sorted(os.environ))
    answer["cwd"] = os.getcwd()
    answer["fds"] = json.dumps(sorted(_fds()))
    conn.send_bytes(json.dumps(answer).encode())
    _serve(conn)


def _read(path: str) -> None:
    with open(path, "rb") as handle:
        handle.read(1)


def _create(path: str) -> None:
    with open(path, "xb"):
        pass


def _attempt(action: Callable[[], object]) -> str:
    try:
        action()
    except OSError as exc:
        return f"denied: {os.strerror(exc.errno or 0)}"
    return "allowed"


def _fds() -> set[int]:
    """Open descriptors, found by trying each (the child cannot list /proc/self/fd)."""
    found = set()
    for fd in range(256):
        try:
            os.fstat(fd)
        except OSError:
            continue
        found.add(fd)
    return found
