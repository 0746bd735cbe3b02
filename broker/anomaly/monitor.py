"""Feeds broker events to the detectors and records every finding the same way: a counter
(`qtestbed_anomalies_total{detector,device}`), an `anomaly.raised` audit entry and a warning.

Detection never blocks the request that triggered it: a finding is recorded in the background
of the event loop, and the detectors themselves are O(1) per event (see bench/bench_metrics.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from broker.anomaly.detectors import (
    ATTESTATION_FAILURE_BURST,
    ATTESTATION_FAILURE_BURST_FACILITY,
    CANARY_FIDELITY_LOW,
    DENIAL_BURST,
    EXPORT_CLASS_CROSSING,
    FRONT_DOOR_REFUSAL_BURST,
    SUBMISSION_RATE_SPIKE,
    SUBMISSION_VOLUME_SPIKE,
    BurstDetector,
    Finding,
    Measured,
    MeasurementDriftDetector,
    RateSpikeDetector,
    SubmissionWatch,
)
from broker.audit.log import AuditLog
from broker.audit.model import AuditEvent
from broker.clock import Clock
from broker.metrics import BrokerMetrics
from broker.settings import AnomalySettings

log = logging.getLogger(__name__)

_FACILITY = "facility"


def submission_watch(settings: AnomalySettings) -> SubmissionWatch:
    """The call-rate and job-volume detectors with the configured thresholds."""

    def detector(floor: int, name: str, unit: str) -> RateSpikeDetector:
        return RateSpikeDetector(
            window=settings.rate_window_seconds,
            sigmas=settings.rate_sigmas,
            floor=floor,
            smoothing=settings.rate_smoothing,
            detector=name,
            unit=unit,
        )

    return SubmissionWatch(
        rate=detector(settings.rate_floor, SUBMISSION_RATE_SPIKE, "submission calls"),
        volume=detector(settings.volume_floor, SUBMISSION_VOLUME_SPIKE, "jobs"),
    )


class AnomalyMonitor:
    def __init__(
        self, *, audit: AuditLog, clock: Clock, metrics: BrokerMetrics, settings: AnomalySettings
    ) -> None:
        self._log = audit
        self._clock = clock
        self._metrics = metrics
        self.settings = settings
        self.submissions = submission_watch(settings)
        self.denials = BurstDetector(
            DENIAL_BURST,
            window=settings.denial_window_seconds,
            threshold=settings.denial_threshold,
        )
        self.device_failures = BurstDetector(
            ATTESTATION_FAILURE_BURST,
            window=settings.attestation_window_seconds,
            threshold=settings.attestation_device_threshold,
        )
        self.facility_failures = BurstDetector(
            ATTESTATION_FAILURE_BURST_FACILITY,
            window=settings.attestation_window_seconds,
            threshold=settings.attestation_facility_threshold,
        )
        self.front_door = BurstDetector(
            FRONT_DOOR_REFUSAL_BURST,
            window=settings.refusal_window_seconds,
            threshold=settings.refusal_threshold,
        )
        self.drift = MeasurementDriftDetector()
        self._pending: set[asyncio.Task[None]] = set()

    def submission(self, principal: str, jobs: int) -> None:
        """One accepted submission call (SubmitJob, or a SubmitJobs batch) that queued `jobs`
        new jobs: the call feeds the rate detector once, its size the volume detector."""
        for finding in self.submissions.observe(principal, self._clock.now(), jobs):
            self._raise(finding)

    def refusal(self, principal: str) -> None:
        """A denial, or a lookup of a device the caller cannot see (probing looks like this)."""
        self._raise(self.denials.observe(principal, self._clock.now()))

    def front_door_refusal(self, identity: str) -> None:
        """A call refused before any service ran, from an identity the certificate named."""
        self._raise(self.front_door.observe(identity, self._clock.now()))

    def attestation_failed(self, device_id: str, *, registered: bool) -> None:
        now = self._clock.now()
        if registered:  # unregistered ids are attacker-chosen: they must not grow detector state
            self._raise(self.device_failures.observe(device_id, now, device=device_id))
        self._raise(self.facility_failures.observe(_FACILITY, now))

    def measured(self, device_id: str, measured: Measured) -> None:
        self._raise(self.drift.observe(device_id, measured))

    def canary(self, device_id: str, fidelity: float, detail: Mapping[str, object]) -> None:
        floor = self.settings.canary_fidelity_floor
        if fidelity >= floor:
            return
        self._raise(
            Finding(
                detector=CANARY_FIDELITY_LOW,
                device=device_id,
                subject=device_id,
                message=f"canary fidelity on {device_id} is {fidelity:.3f}, below the floor "
                f"{floor:.3f}: results from this device may be wrong",
                detail={"fidelity": round(fidelity, 4), "floor": floor, **detail},
            )
        )

    def export_crossing(self, device_id: str, before: str, after: str) -> None:
        self._raise(
            Finding(
                detector=EXPORT_CLASS_CROSSING,
                device=device_id,
                subject=device_id,
                message=f"device {device_id} crossed an export-control band: {before} -> {after}",
                detail={"from": before, "to": after},
            )
        )

    def _raise(self, finding: Finding | None) -> None:
        if finding is None:
            return
        self._metrics.anomalies.labels(finding.detector, finding.device).inc()
        log.warning("anomaly %s: %s", finding.detector, finding.message)
        detail = {
            "detector": finding.detector,
            "device": finding.device,
            "message": finding.message,
            **finding.detail,
        }
        event = self._log.event("anomaly.raised", "broker", finding.subject, detail)
        task = asyncio.get_running_loop().create_task(self._audit(event))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _audit(self, event: AuditEvent) -> None:
        try:
            await self._log.append(event)
        except Exception:
            log.exception("could not audit an anomaly; the metric still counts it")

    async def drain(self) -> None:
        """Wait for findings still being written (shutdown, tests)."""
        while self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
