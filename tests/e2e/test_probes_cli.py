"""Health probes as a container engine or the kubelet runs them: `qtestbed probe broker` asks
the broker's plaintext health port (grpc.health.v1 and nothing else), `qtestbed probe driver`
reads the status file the driver rewrites every heartbeat. Both answer 0 while the processes
are well and 1, saying why, once they are not.
"""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from qtestbed.testing import eventually
from qtestbed.v1 import jobs_pb2, jobs_pb2_grpc
from tests.e2e.console import qtestbed
from tests.e2e.processes import running

pytestmark = pytest.mark.slow


def test_probes_follow_the_broker_and_the_driver(tmp_path: Path) -> None:
    root = tmp_path / "fac"
    assert qtestbed("init", str(root)).returncode == 0
    status = tmp_path / "sim-open.status.json"
    for processes in running(root):
        broker = processes.broker(env={"QTESTBED_HEALTH_LISTEN": "127.0.0.1:0"})
        health = json.loads((root / "broker-ready.json").read_text())["health"]
        processes.driver("sim-open", "--status-file", str(status))
        serving = qtestbed("probe", "broker", "--address", health)
        assert serving.returncode == 0, serving.stdout + serving.stderr
        assert serving.stdout.strip() == f"broker at {health}: SERVING"
        service = "qtestbed.v1.JobService"
        one = qtestbed("probe", "broker", "--address", health, "--service", service)
        assert one.returncode == 0, one.stdout
        _only_health_is_served(health)

        def attested() -> bool:
            done = qtestbed("probe", "driver", "--status-file", str(status), "--attested")
            return done.returncode == 0 and done.stdout.strip() == "driver healthy"

        eventually(attested, timeout=90, every=0.5, what="the driver probe to pass")
        assert processes.stop(broker) == 0
        down = qtestbed("probe", "broker", "--address", health, "--timeout", "1")
        assert down.returncode == 1
        assert "not healthy: UNAVAILABLE" in down.stdout

        def silent() -> str | None:  # the driver keeps writing, but hears nothing from the broker
            done = qtestbed("probe", "driver", "--status-file", str(status), "--max-age", "1")
            return done.stdout if done.returncode == 1 else None

        assert "nothing heard from the broker" in eventually(silent, what="the probe to fail")

    def stalled() -> bool:  # the driver has stopped too: the file ages
        done = qtestbed("probe", "driver", "--status-file", str(status), "--max-age", "1")
        return "the driver's loop has stalled" in done.stdout

    eventually(stalled, what="the probe to see the driver stopped")
    missing = qtestbed("probe", "driver", "--status-file", str(tmp_path / "none.json"))
    assert missing.returncode == 1
    assert "no readable status file" in missing.stdout


def _only_health_is_served(address: str) -> None:
    """The plaintext port knows no other service: a job call there is UNIMPLEMENTED."""
    with grpc.insecure_channel(address) as channel:
        stub = jobs_pb2_grpc.JobServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.ListJobs(jobs_pb2.ListJobsRequest(), timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
