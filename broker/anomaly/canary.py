"""Canary circuits: the broker's own probe of result quality on each attested device.

Attestation proves what a device runs, not that its results are still good: hardware drifts
away from its calibration without any measurement changing. Every `canary_interval_seconds` a
device's idle, attested driver gets a GHZ circuit whose ideal distribution is known (half
all-zeros, half all-ones); the receipt is verified like any result, and the Hellinger fidelity
of the counts to the ideal is exported and compared with a floor. Canaries are not jobs: they
are never stored, queued or shown to researchers, and take no project's device time.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Mapping

from broker.anomaly.detectors import hellinger_fidelity
from broker.anomaly.monitor import AnomalyMonitor
from broker.jobs.model import Circuit, Job, JobState, Lease
from broker.metrics import BrokerMetrics
from broker.settings import AnomalySettings
from qtestbed.shared.circuits import CircuitFormat

CANARY_OWNER = "qtestbed-canary"
# The first canary of a newly attested device runs after this long at most.
_FIRST_RUN_SECONDS = 60.0


def ghz_qasm2(num_qubits: int) -> str:
    lines = [
        "OPENQASM 2.0;",
        'include "qelib1.inc";',
        f"qreg q[{num_qubits}];",
        f"creg c[{num_qubits}];",
        "h q[0];",
        *(f"cx q[{i}],q[{i + 1}];" for i in range(num_qubits - 1)),
        "measure q -> c;",
    ]
    return "\n".join(lines) + "\n"


class CanaryRunner:
    def __init__(
        self, settings: AnomalySettings, monitor: AnomalyMonitor, metrics: BrokerMetrics
    ) -> None:
        self.settings = settings
        self.monitor = monitor
        self.metrics = metrics
        self._next: dict[str, float] = {}

    def due(self, device_id: str, now: float) -> bool:
        """Whether the device should get a canary now; schedules its first one on first sight."""
        when = self._next.get(device_id)
        if when is None:
            self._next[device_id] = now + min(
                self.settings.canary_interval_seconds, _FIRST_RUN_SECONDS
            )
            return False
        return now >= when

    def lease(self, device_id: str, device_qubits: int, now: float, lease_seconds: float) -> Job:
        """A canary job leased to the device (never stored; its receipt is still verified)."""
        self._next[device_id] = now + self.settings.canary_interval_seconds
        width = max(1, min(self.settings.canary_qubits, device_qubits))
        payload = ghz_qasm2(width).encode()
        circuit = Circuit(
            format=CircuitFormat.OPENQASM2,
            payload=payload,
            digest=hashlib.sha256(payload).hexdigest(),
            num_qubits=width,
            depth=width + 1,
        )
        job = Job(
            job_id=f"canary-{uuid.uuid4().hex}",
            owner=CANARY_OWNER,
            device_id=device_id,
            circuit=circuit,
            shots=self.settings.canary_shots,
            state=JobState.QUEUED,
            created_at=now,
            updated_at=now,
        )
        lease = Lease(
            lease_id=uuid.uuid4().hex,
            device_id=device_id,
            expires_at=now + lease_seconds,
            dispatch_nonce=secrets.token_bytes(32),
        )
        return job.transition(JobState.DISPATCHED, now=now, lease=lease)

    def finished(self, job: Job, counts: Mapping[str, int], problems: list[str]) -> float | None:
        """Record a canary's result; returns its fidelity (None when the result was refused)."""
        if problems:
            self.metrics.canary_runs.labels(job.device_id, "failed").inc()
            return None
        width = job.circuit.num_qubits
        ideal = {"0" * width: 0.5, "1" * width: 0.5}
        fidelity = hellinger_fidelity(counts, ideal)
        self.metrics.canary_fidelity.labels(job.device_id).set(fidelity)
        low = fidelity < self.settings.canary_fidelity_floor
        self.metrics.canary_runs.labels(job.device_id, "low" if low else "ok").inc()
        self.monitor.canary(
            job.device_id, fidelity, {"qubits": width, "shots": sum(counts.values())}
        )
        return fidelity

    def failed(self, device_id: str) -> None:
        self.metrics.canary_runs.labels(device_id, "failed").inc()
