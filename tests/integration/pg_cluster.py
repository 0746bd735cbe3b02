"""A PostgreSQL cluster of a test's own, for tests that stop, crash or restart the database.

The shared server is never stopped: a test that takes the database away starts this cluster
(initdb + pg_ctl in a fresh directory, on a free port of 127.0.0.1, its socket beside its data)
and it is stopped and deleted when the test ends, however it ends. Run as root, the server
runs as the `postgres` user (PostgreSQL refuses root) in a directory that user owns.

Without the server binaries the test is skipped on a workstation, and fails under CI=true.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_BIN = Path(os.environ.get("QTESTBED_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
_SERVER_USER = "postgres"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class PgCluster:
    """One cluster: `dsn` reaches it over TCP; `crash()` kills it, `start()` brings it back."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.log = root / "server.log"
        self.port = _free_port()
        self._as_server = ["runuser", "-u", _SERVER_USER, "--"] if os.geteuid() == 0 else []

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        cmd = [*self._as_server, str(PG_BIN / tool), *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            server_log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(
                f"{tool} failed ({done.returncode}): {done.stderr.strip()}\n{server_log[-2000:]}"
            )

    def init(self) -> None:
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust",
            "--no-sync", "-E", "UTF8", "--locale=C",
        )  # fmt: skip

    def start(self) -> None:
        """Start (or restart after `crash`) on the same port; returns once it accepts."""
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._run("pg_ctl", "start", "-w", "-t", "30", "-D", str(self.data),
                  "-l", str(self.log), "-o", options)  # fmt: skip

    def crash(self) -> None:
        """Stop at once, as a crash does: no checkpoint, sessions cut mid-transaction; the
        next start replays the write-ahead log."""
        self._run("pg_ctl", "stop", "-m", "immediate", "-w", "-D", str(self.data))

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()


def server_binaries_present() -> bool:
    return all((PG_BIN / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres"))


@pytest.fixture
def pg_cluster() -> Iterator[PgCluster]:
    """A started cluster of this test's own, stopped and deleted afterwards."""
    if not server_binaries_present():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the store-outage tests: no PostgreSQL server in {PG_BIN}")
        pytest.skip(f"no PostgreSQL server binaries in {PG_BIN} (set QTESTBED_TEST_PG_BIN)")
    # Not pytest's tmp_path: its parents are private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="qtestbed-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, _SERVER_USER, _SERVER_USER)
    cluster = PgCluster(root)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        try:
            if cluster.running():
                cluster.crash()
        finally:
            shutil.rmtree(root, ignore_errors=True)
