"""The audit witness's own metrics, on its own registry and /metrics endpoint."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from attestation.tree_heads import TreeHead
from attestation.witness_log import WitnessAlarm

ALARM_KINDS = ("fork", "rollback", "inconsistent", "bad_checkpoint")


class WitnessMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.alarms = Gauge(
            "qtestbed_witness_alarms",
            "Alarms on the witness's file, by kind (fork, rollback, inconsistent, "
            "bad_checkpoint); sticky: any value above 0 is an incident.",
            ["kind"],
            registry=r,
        )
        self.tree_size = Gauge(
            "qtestbed_witness_tree_size",
            "Tree size of the newest checkpoint the witness cosigned.",
            registry=r,
        )
        self.poll_failures = Counter(
            "qtestbed_witness_poll_failures",
            "Polls of the broker that failed (refused or unreachable).",
            registry=r,
        )
        for kind in ALARM_KINDS:
            self.alarms.labels(kind).set(0)

    def load(self, alarms: Sequence[WitnessAlarm], latest: TreeHead | None) -> None:
        for alarm in alarms:
            self.alarm(alarm)
        self.polled(latest)

    def alarm(self, alarm: WitnessAlarm) -> None:
        self.alarms.labels(alarm.kind).inc()

    def polled(self, cosigned: TreeHead | None) -> None:
        if cosigned is not None:
            self.tree_size.set(cosigned.tree_size)

    def poll_failed(self) -> None:
        self.poll_failures.inc()

    def serve(self, host: str, port: int) -> str:
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return f"http://{host}:{server.server_port}/metrics"
