"""The circuit-decoder child cannot read key files (issue 12): a real child, confined by the
routine the broker's own child runs, tries to read the broker's TLS key, a device key, a link
secret, a CA key and /etc, to list the facility, to write and to connect out, and is refused
each time while it still reads Python's libraries and decodes circuits. The real broker's
children (its decoder pool) are then checked from outside: each confined, in `/`, holding only
its pipe."""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from qtestbed.shared.circuits import DEFAULT_LIMITS, CircuitFormat, IsolatedDecoder
from qtestbed.testing import LocalFacility, eventually
from tests.integration.decoder_probe import ProbingDecoder, kernel_landlock_abi

QASM3 = b'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[2] q;\nbit[2] c;\nh q[0];\ncx q[0], q[1];\nc = measure q;\n'  # noqa: E501


needs_landlock = pytest.mark.skipif(
    kernel_landlock_abi() == 0, reason="this kernel has no Landlock (see confine.py)"
)


@pytest.fixture
def probing() -> Iterator[ProbingDecoder]:
    decoder = ProbingDecoder()
    decoder.start()
    try:
        yield decoder
    finally:
        decoder.close()


@needs_landlock
def test_a_confined_decoder_child_reads_no_key_file(
    probing: ProbingDecoder, facility: LocalFacility, tmp_path: Path
) -> None:
    root = facility.root
    ca_copy = root / "ca" / "ca.key"  # a CA key where it must never be: still unreadable
    shutil.copy(facility.offline_ca / "ca.key", ca_copy)
    keys = [
        root / "broker" / "broker.key",
        root / "devices" / "sim-open.key",
        root / "link" / "broker.key_secret",
        root / "users" / "alice.key",
        ca_copy,
        facility.offline_ca / "clients-ca.key",
    ]
    assert probing.confinement is not None
    assert probing.confinement.landlock_abi == kernel_landlock_abi()
    stdlib_file = Path(json.__file__)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        answer = probing.probe(
            {
                "read": [str(p) for p in (*keys, Path("/etc/passwd"), stdlib_file)],
                "list": [str(root), str(root / "ca"), "/etc", "/proc/self/fd"],
                "write": [str(tmp_path / "dropped"), str(root / "ca" / "planted.key")],
                "connect": listener.getsockname()[1],
            }
        )
    for key in keys:
        assert answer[f"read {key}"].startswith("denied"), answer
    assert answer["read /etc/passwd"].startswith("denied")
    assert answer[f"read {stdlib_file}"] == "allowed"  # what it needs, so the probe can tell
    for listed in (root, root / "ca", "/etc", "/proc/self/fd"):
        assert answer[f"list {listed}"].startswith("denied"), answer
    assert answer[f"write {tmp_path / 'dropped'}"].startswith("denied")
    assert not (tmp_path / "dropped").exists()
    assert not (root / "ca" / "planted.key").exists()
    if probing.confinement.landlock_abi >= 4:
        assert answer["connect"].startswith("denied"), answer
    assert answer["environ"] == "[]"
    assert answer["cwd"] == "/"
    assert len(json.loads(answer["fds"])) == 4  # standard input, output, error; its pipe
    # And it still does its job, confined.
    summary = probing.summarize(CircuitFormat.OPENQASM3, QASM3, DEFAULT_LIMITS)
    assert (summary.num_qubits, summary.depth) == (2, 3)


@needs_landlock
def test_the_brokers_own_decoder_children_are_all_confined(facility: LocalFacility) -> None:
    facility.start_broker()
    assert facility.embedded is not None
    assert facility.embedded.broker is not None
    pool = facility.embedded.broker.decoder
    assert pool.size >= 2  # a pool, so that one principal cannot hold every child
    # The broker answers while its children start: wait until every one is up.
    eventually(lambda: all(m.running for m in pool.members), what="every decoder child to start")
    for _ in range(pool.size):  # each payload goes to some child; all of them must decode
        summary = pool.summarize(CircuitFormat.OPENQASM3, QASM3, DEFAULT_LIMITS)
        assert summary.num_qubits == 2
    for member in pool.members:
        assert isinstance(member, IsolatedDecoder)
        assert member.confinement is not None
        assert member.confinement.landlock_abi == kernel_landlock_abi()
        child = member._child  # the broker's real child, seen from outside
        assert child is not None
        assert child.pid is not None
        status = Path(f"/proc/{child.pid}/status").read_text()
        assert "NoNewPrivs:\t1" in status  # set on the way to landlock_restrict_self
        assert os.readlink(f"/proc/{child.pid}/cwd") == "/"
        fds = os.listdir(f"/proc/{child.pid}/fd")
        assert len(fds) == 4, [os.readlink(f"/proc/{child.pid}/fd/{fd}") for fd in fds]
