"""The facility's processes as an operator starts them, `qtestbed broker` and `qtestbed driver`
as subprocesses on free ports, and a record of every file a process opens.

`OpenLog` proves what a process did not read: Python raises an `open` audit event (PEP 578) for
every `open()`, `os.open()`, `Path.read_bytes()`..., and a `sitecustomize` module on the
process's PYTHONPATH appends each opened path to a log file before anything else runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from qtestbed.testing import eventually
from tests.e2e.console import qtestbed

# Installed as sitecustomize.py in the logged process: opened paths, one a line, made absolute.
_HOOK = """
import os, sys

def _install(log):
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def hook(event, args):
        if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
            path = os.path.abspath(os.fsdecode(os.fspath(args[0])))
            os.write(fd, (path + "\\n").encode("utf-8", "surrogateescape"))

    sys.addaudithook(hook)

if os.environ.get("QTESTBED_OPEN_LOG"):
    _install(os.environ["QTESTBED_OPEN_LOG"])
"""


class OpenLog:
    """Every path a process opened, for processes started with `env`."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "sitecustomize.py").write_text(_HOOK)
        self.path = folder / "opened.log"
        self.env = {"PYTHONPATH": str(folder), "QTESTBED_OPEN_LOG": str(self.path)}

    def opened(self) -> set[Path]:
        if not self.path.exists():
            return set()
        return {Path(line) for line in self.path.read_text().splitlines() if line}


class Processes:
    """Broker and drivers of one facility, stopped (SIGTERM, then SIGKILL) on exit."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.running: list[subprocess.Popen[bytes]] = []
        self.grpc = ""
        self.link = ""

    def broker(
        self, env: Mapping[str, str] | None = None, config: Path | None = None
    ) -> subprocess.Popen[bytes]:
        """`qtestbed broker --config ROOT/broker.toml` (or `config`) on free ports."""
        ready = self.root / "broker-ready.json"
        ready.unlink(missing_ok=True)
        proc = self._start(
            "broker",
            "--config",
            str(config or self.root / "broker.toml"),
            "--listen",
            "127.0.0.1:0",
            "--link-listen",
            "tcp://127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--ready-file",
            str(ready),
            log="broker.log",
            env=env,
        )
        info = eventually(lambda: _ready(ready, proc, self.root), what="the broker to be ready")
        self.grpc, self.link = info["grpc"], info["link"]
        return proc

    def driver(self, device_id: str, *options: str) -> subprocess.Popen[bytes]:
        """`qtestbed driver` for `device_id` on this broker, with any further `options`."""
        config = self.root / "drivers" / f"{device_id}.toml"
        return self._start(
            "driver",
            "--config",
            str(config),
            "--broker",
            self.link,
            *options,
            log=f"{device_id}.log",
        )

    def point_profile(self, profile: Path) -> Path:
        """Make a profile name the running broker's address."""
        text = profile.read_text().replace("127.0.0.1:50051", self.grpc)
        profile.write_text(text)
        return profile

    def _start(
        self, *args: str, log: str, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        with open(self.root / log, "ab") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "qtestbed", *args],
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=environment,
            )
        self.running.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> int:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def stop_all(self) -> None:
        for proc in reversed(self.running):  # drivers before the broker
            self.stop(proc)


def _ready(path: Path, proc: subprocess.Popen[bytes], root: Path) -> dict[str, str] | None:
    if proc.poll() is not None:
        log = (root / "broker.log").read_text()[-2000:]
        raise RuntimeError(f"broker exited with {proc.returncode} before it was ready:\n{log}")
    if not path.exists():
        return None
    info: dict[str, str] = json.loads(path.read_text())
    return info


def wait_available(profile: Path, device_id: str) -> None:
    """Until `qtestbed devices` shows the device attested and ready for this caller."""

    def ready() -> bool:
        done = qtestbed("devices", "--json", profile=profile)
        devices: list[dict[str, Any]] = json.loads(done.stdout) if done.returncode == 0 else []
        return any(d["device_id"] == device_id and d["available"] for d in devices)

    eventually(ready, timeout=90, every=0.5, what=f"{device_id} to attest")


def running(root: Path) -> Iterator[Processes]:
    """A generator fixture body: the processes of the facility at ROOT, stopped afterwards."""
    processes = Processes(root)
    try:
        yield processes
    finally:
        processes.stop_all()
