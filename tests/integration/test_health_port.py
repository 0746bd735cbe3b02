"""The plaintext health port holds a handful of probe calls at once: past them a call is refused
at once with RESOURCE_EXHAUSTED, counted on /metrics and audited with the front door's refusals,
and the port answers again as soon as a place frees."""

from __future__ import annotations

import json
import re

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from broker.grpc.health_port import MAX_CONCURRENT_PROBES
from qtestbed.testing import LocalFacility, eventually
from tests.integration.support import audit_entries


def test_a_flood_on_the_health_port_is_refused_counted_and_audited(
    facility: LocalFacility,
) -> None:
    config = facility.root / "broker.toml"
    config.write_text('health_listen = "127.0.0.1:0"\n' + config.read_text())
    facility.timing["front_door_audit_seconds"] = 1.0
    facility.start_broker_process()
    health = json.loads((facility.root / "broker-ready.json").read_text())["health"]
    with grpc.insecure_channel(health) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        held = [stub.Watch(health_pb2.HealthCheckRequest(), timeout=60) for _ in range(4)]
        assert len(held) == MAX_CONCURRENT_PROBES
        for stream in held:
            assert next(stream).status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as refused:
            stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "at most 4 calls at once" in str(refused.value.details())
        held.pop().cancel()

        def answered() -> bool:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
            except grpc.RpcError as err:
                if err.code() is not grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise
                return False
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

        eventually(answered, what="the freed place to admit a probe")
        for stream in held:
            stream.cancel()
    counted = re.search(
        r'^qtestbed_front_door_refusals_total\{reason="health_busy"\} (\S+)$',
        facility.scrape(),
        re.M,
    )
    assert counted is not None
    refusals = float(counted.group(1))
    assert refusals >= 1

    def audited() -> int | None:
        rows = audit_entries(facility, kind="edge.refused")
        total = sum(int(r.detail["count"]) for r in rows if r.detail["reason"] == "health_busy")
        return total if total == refusals else None

    eventually(audited, what="the refusals' aggregate audit entry")
