"""A whole facility on this machine, on free ports: for the demo, the test suite and bench/.

Everything is real: `qtestbed init` output, a broker (embedded in a thread, or its own process),
driver agents as separate processes, and clients speaking mutual-TLS gRPC.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from qtestbed.client import Client, Profile
from qtestbed.facility_init import init_facility
from qtestbed.offline_ca import default_offline_ca

if TYPE_CHECKING:
    from broker.app import BrokerAddresses
    from broker.embedded import EmbeddedBroker
    from broker.settings import BrokerSettings

T = TypeVar("T")

# Short heartbeats so a lost driver is noticed in about a second, not three.
FAST_TIMING = {"heartbeat_seconds": 0.3, "heartbeat_misses": 4, "tick_seconds": 0.2}


def eventually(
    check: Callable[[], T | None],
    *,
    timeout: float = 30.0,
    every: float = 0.05,
    what: str = "condition",
) -> T:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def scrape_metrics(url: str, *, ca: Path, cert: Path, key: Path, timeout: float = 10.0) -> str:
    """One scrape of a broker's /metrics, as Prometheus does it: mutual TLS, the broker checked
    against the facility root `ca`, and a client certificate (with its issuing CA's certificate
    after it, as `qtestbed init` writes them) of a principal with the scraper role."""
    context = ssl.create_default_context(cafile=str(ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(certfile=str(cert), keyfile=str(key))
    with urllib.request.urlopen(url, timeout=timeout, context=context) as response:  # noqa: S310 - https only
        text: str = response.read().decode()
    return text


# Per-principal limits far above any load a benchmark on one machine offers, by broker.toml
# section: for benches that measure the submission path behind them with one principal
# (bench/bench_broker.py, bench/bench_metrics.py).
UNLIMITED_ADMISSION: Mapping[str, Mapping[str, Any]] = {
    "admission": {
        "principal_burst": 10**9,
        "principal_jobs_per_second": 1e9,
        "facility_burst": 10**9,
        "facility_jobs_per_second": 1e9,
        "max_store_queue": 10**9,
    },
    "decoding": {"per_principal": 10**6},
}


class LocalFacility:
    def __init__(
        self,
        root: Path,
        *,
        store: str | None = None,
        timing: Mapping[str, Any] | None = None,
        anomaly: Mapping[str, Any] | None = None,
        scheduling: Mapping[str, Any] | None = None,
        limits: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.root = root
        # Where `init` put the CA keys: beside the facility, never in it (the broker refuses).
        self.offline_ca = default_offline_ca(root)
        if not (root / "facility.toml").exists():
            init_facility(root, offline_ca=self.offline_ca)
        self.store = store
        self.timing = {**FAST_TIMING, **(timing or {})}
        self.anomaly = dict(anomaly or {})
        self.scheduling = dict(scheduling or {})
        # broker.toml sections written before [timing] (admission, decoding): values to change.
        self.limits = {section: dict(values) for section, values in (limits or {}).items()}
        self.embedded: EmbeddedBroker | None = None
        self.broker_process: subprocess.Popen[bytes] | None = None
        self.addresses: BrokerAddresses | None = None
        self.drivers: list[subprocess.Popen[bytes]] = []
        self._clients: list[Client] = []

    def settings(self) -> BrokerSettings:
        from broker.settings import load_settings

        overrides: dict[str, Any] = {
            "listen": "127.0.0.1:0",
            "link_listen": "tcp://127.0.0.1:0",
            "metrics_listen": "127.0.0.1:0",
            "store": self.store,
        }
        base = load_settings(self.root / "broker.toml", overrides)
        timing = dataclasses.replace(base.timing, **self.timing)
        anomaly = dataclasses.replace(base.anomaly, **self.anomaly)
        scheduling = dataclasses.replace(base.scheduling, **self.scheduling)
        limits = {
            section: dataclasses.replace(getattr(base, section), **values)
            for section, values in self.limits.items()
        }
        return dataclasses.replace(
            base, timing=timing, anomaly=anomaly, scheduling=scheduling, **limits
        )

    def start_broker(self) -> BrokerAddresses:
        """The broker on a thread of this process (see `broker.embedded`)."""
        from broker.embedded import EmbeddedBroker

        self.embedded = EmbeddedBroker(self.settings())
        self.addresses = self.embedded.start()
        return self.addresses

    def start_broker_process(self, *, grpc_port: int = 0, link_port: int = 0) -> BrokerAddresses:
        """The broker in its own process (so a test can SIGKILL it); fixed ports allow restarts."""
        if self.broker_process is not None and self.broker_process.poll() is None:
            raise RuntimeError("a broker process is already running; stop or kill it first")
        self.broker_process, self.addresses = self.launch_broker(
            grpc_port=grpc_port, link_port=link_port
        )
        return self.addresses

    def launch_broker(
        self, *, grpc_port: int = 0, link_port: int = 0, name: str = "broker"
    ) -> tuple[subprocess.Popen[bytes], BrokerAddresses]:
        """Start one more broker process on this facility's settings and wait until it is
        ready (replicas on a shared store each have their own `name`); the caller stops it."""
        self._write_timing()
        ready = self.root / f"{name}-ready.json"
        ready.unlink(missing_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "qtestbed",
            "broker",
            "--config",
            str(self.root / "broker.toml"),
            "--listen",
            f"127.0.0.1:{grpc_port}",
            "--link-listen",
            f"tcp://127.0.0.1:{link_port}",
            "--metrics-listen",
            "127.0.0.1:0",
            "--ready-file",
            str(ready),
        ]
        if self.store:
            cmd += ["--store", self.store]
        with open(self.root / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
        from broker.app import BrokerAddresses

        try:
            info = eventually(lambda: _read_ready(ready, proc), what=f"{name} to report its ports")
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        addresses = BrokerAddresses(grpc=info["grpc"], link=info["link"], metrics=info["metrics"])
        return proc, addresses

    def _write_timing(self) -> None:
        from broker.settings import TimingSettings

        text = (self.root / "broker.toml").read_text().split("[timing]")[0]
        for section, values in self.limits.items():
            text = _with_values(text, section, values)
        body = "\n".join(
            f"{k} = {v}" for k, v in {**dataclasses.asdict(TimingSettings()), **self.timing}.items()
        )
        (self.root / "broker.toml").write_text(f"{text}[timing]\n{body}\n")

    def start_driver(
        self,
        device_id: str,
        *,
        config: Path | None = None,
        extra_config: str = "",
        args: Sequence[str] = (),
        brokers: Sequence[str] = (),
    ) -> subprocess.Popen[bytes]:
        """A driver process; on `brokers` (link endpoints, in order) instead of this broker."""
        assert brokers or self.addresses is not None, "start the broker first"
        endpoints = ",".join(brokers) if brokers else self.addresses.link if self.addresses else ""
        path = config or self.root / "drivers" / f"{device_id}.toml"
        if extra_config:
            text = path.read_text().replace("[device]", extra_config + "\n[device]", 1)
            path = self.root / "drivers" / f"{device_id}-{len(self.drivers)}.toml"
            path.write_text(text)
        cmd = [sys.executable, "-m", "qtestbed", "driver", "--config", str(path)]
        with open(self.root / f"driver-{device_id}-{len(self.drivers)}.log", "ab") as log:
            proc = subprocess.Popen(
                [*cmd, "--broker", endpoints, *args],
                stdout=subprocess.DEVNULL,
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self.drivers.append(proc)
        return proc

    def client(self, name: str, *, broker: str | None = None) -> Client:
        """`name`'s client of this facility's broker, or of the replica at `broker`."""
        if broker is None:
            assert self.addresses is not None
            broker = self.addresses.grpc
        profile = Profile.load(self.root / "users" / f"{name}.toml")
        client = Client(dataclasses.replace(profile, broker=broker))
        self._clients.append(client)
        return client

    def scrape(self, principal: str = "prometheus") -> str:
        """The broker's metrics, scraped as `principal` (users/NAME.{pem,key} of `init`)."""
        assert self.addresses is not None, "start the broker first"
        users = self.root / "users"
        return scrape_metrics(
            self.addresses.metrics,
            ca=self.root / "ca" / "ca.pem",
            cert=users / f"{principal}.pem",
            key=users / f"{principal}.key",
        )

    def wait_available(
        self, client: Client, device_id: str, *, count: int = 1, timeout: float = 60.0
    ) -> None:
        def ready() -> bool:
            return any(d.device_id == device_id and d.available for d in client.devices())

        eventually(
            ready, timeout=timeout, what=f"device {device_id} to attest and become available"
        )

    def stop(self) -> None:
        for client in self._clients:
            client.close()
        for proc in self.drivers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.drivers:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.embedded is not None:
            self.embedded.stop()
            self.embedded = None
        if self.broker_process is not None and self.broker_process.poll() is None:
            self.broker_process.send_signal(signal.SIGTERM)
            try:
                self.broker_process.wait(15)
            except subprocess.TimeoutExpired:
                self.broker_process.kill()
                self.broker_process.wait()

    def __enter__(self) -> LocalFacility:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _read_ready(path: Path, proc: subprocess.Popen[bytes]) -> dict[str, str] | None:
    if proc.poll() is not None:
        raise RuntimeError(f"broker exited with code {proc.returncode} before it was ready")
    if not path.exists():
        return None
    data: dict[str, str] = json.loads(path.read_text())
    return data


def _with_values(text: str, section: str, values: Mapping[str, Any]) -> str:
    """broker.toml `text` with `values` set in its `[section]` (which must be there)."""
    head, header, rest = text.partition(f"[{section}]")
    if not header:
        raise ValueError(f"broker.toml has no [{section}] before [timing]")
    body, bracket, tail = rest.partition("\n[")
    for key, value in values.items():
        line = f"{key} = {value!r}"
        body, found = re.subn(rf"(?m)^{re.escape(key)} *=.*$", line, body)
        if not found:
            body = body.rstrip("\n") + f"\n{line}\n"
    return head + header + body + bracket + tail
