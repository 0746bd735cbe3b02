"""The broker as RATS Verifier front-end: challenges drivers, appraises their evidence, and keeps
each connection's attestation result current (re-challenging before it expires).

Only a connection whose latest result affirms and has not expired is dispatchable; every
verdict is audited and counted. Challenges are per connection: each connection has its own small
nonce table, so an answer is accepted only from the connection that was challenged, and no
other connection (another device's, or a flood of them) can push a nonce out of it.
"""

from __future__ import annotations

import datetime as dt
import logging
import time

from attestation.appraisal import (
    AppraisalPolicy,
    AttestationResult,
    AttestationStatus,
    ReasonCode,
    ReferenceValues,
    appraise,
)
from attestation.keys import VerifyKey
from attestation.nonces import NonceIssuer
from attestation.pki import CertificateError, verify_device_chain
from broker.anomaly.detectors import Measured
from broker.anomaly.monitor import AnomalyMonitor
from broker.audit.log import AuditLog
from broker.clock import Clock
from broker.devices.export_class import ExportClasses
from broker.devices.model import AttestationRecord, DeviceProfile, DeviceStatus
from broker.devices.registry import DeviceRegistry
from broker.jobs.wakeups import DispatchWakeups
from broker.link import messages as m
from broker.link.fleet import DriverConnection, Fleet, LinkState
from broker.link.peer import Peer
from broker.link.port import LinkPort
from broker.metrics import BrokerMetrics
from broker.settings import TimingSettings

log = logging.getLogger(__name__)

# Evidence kept in the history; anything larger was malformed anyway and is cut.
MAX_KEPT_EVIDENCE = 64 * 1024

# Re-challenge when this fraction of a result's lifetime is left, so it never lapses in use.
_REFRESH_FRACTION = 0.25
# What must not change between appraisals unless the operator publishes new reference values.
_DRIFT_MEASUREMENTS = ("firmware", "control_software", "driver_build", "calibration_digest")


class Attestor:
    def __init__(
        self,
        *,
        link: LinkPort,
        fleet: Fleet,
        registry: DeviceRegistry,
        exports: ExportClasses,
        clock: Clock,
        audit: AuditLog,
        metrics: BrokerMetrics,
        timing: TimingSettings,
        wakeups: DispatchWakeups,
        anomalies: AnomalyMonitor,
    ) -> None:
        self._link = link
        self._fleet = fleet
        self._registry = registry
        self._exports = exports
        self._clock = clock
        self._audit = audit
        self._metrics = metrics
        self._timing = timing
        self._wakeups = wakeups
        self._anomalies = anomalies
        self.policy = AppraisalPolicy(
            max_evidence_age_seconds=timing.max_evidence_age_seconds,
            max_clock_skew_seconds=timing.max_clock_skew_seconds,
            result_ttl_seconds=timing.attestation_ttl_seconds,
        )

    async def on_hello(self, peer: Peer, hello: m.Hello) -> None:
        """A Hello admitted for `peer` (its key is authorised for the device it names)."""
        device_id = peer.device_id
        if self._registry.get(device_id) is None:
            await self._refuse_unknown(peer, device_id)
            return
        profile = DeviceProfile(
            num_qubits=hello.num_qubits,
            basis_gates=hello.basis_gates,
            coupling_map=hello.coupling_map,
            backend=hello.backend,
            driver_build=hello.driver_build,
        )
        conn = DriverConnection(
            peer=peer,
            device_id=device_id,
            profile=profile,
            last_seen=self._clock.now(),
            nonces=NonceIssuer(
                ttl_seconds=self._timing.nonce_ttl_seconds,
                max_entries=self._timing.nonces_per_connection,
            ),
            grant_key=hello.grant_key,
            certificate_chain=hello.certificate_chain,
            capacity=min(hello.max_leases, self._timing.max_leases_per_driver),
        )
        self._fleet.add(conn)
        self._metrics.drivers.labels(device_id).inc()
        log.info("driver connected: %s", peer.label)
        await self.challenge(conn)

    async def _refuse_unknown(self, peer: Peer, device_id: str) -> None:
        # The label is fixed: unregistered ids are attacker-chosen and must not grow the metrics.
        self._metrics.attestations.labels("unregistered", "contraindicated", "UNKNOWN_DEVICE").inc()
        self._anomalies.attestation_failed(device_id[:128], registered=False)
        detail = {"reasons": ["UNKNOWN_DEVICE"], "details": ["device is not registered"]}
        await self._audit.record("attestation.failed", "broker", device_id[:128], detail)
        goodbye = m.Goodbye(
            code=m.GoodbyeCode.UNKNOWN_DEVICE,
            reason=f"device {device_id!r} is not registered at this facility; an operator must "
            "register its certificate (qtestbed device register)",
        )
        await self._link.send(peer, goodbye)

    async def challenge(self, conn: DriverConnection) -> None:
        now = self._clock.now()
        nonce = conn.nonces.issue(conn.device_id, now)
        conn.challenge_sent_at = now
        if conn.state is not LinkState.ATTESTED:
            conn.state = LinkState.CHALLENGED
        challenge = m.Challenge(nonce=nonce, deadline_seconds=self._timing.nonce_ttl_seconds)
        await self._link.send(conn.peer, challenge)

    async def on_evidence(self, conn: DriverConnection, evidence: m.Evidence) -> None:
        # The values this evidence is appraised against also decide whether its two-qubit
        # error may set the connection's export class (only if a window bounds it).
        reference = self._registry.reference_for(conn.device_id)
        result = self._appraise(conn, evidence.envelope, reference)
        conn.challenge_sent_at = 0.0
        await self._record(conn, result, evidence.envelope)
        if result.authenticated and result.claims is not None:
            self._anomalies.measured(conn.device_id, self._measured(conn.device_id, result))
        if result.affirming(self._clock.now()) and reference is not None:
            await self._affirm(conn, result, reference)
            return
        self.reject(conn, result)
        await self._exports.refresh(conn.device_id)
        if result.authenticated:
            await self.quarantine(conn.device_id, result)

    def _appraise(
        self, conn: DriverConnection, envelope: bytes, reference: ReferenceValues | None
    ) -> AttestationResult:
        started = time.perf_counter()
        registry = self._registry
        result = appraise(
            envelope,
            expected_device_id=conn.device_id,
            certificate_chain=conn.certificate_chain,
            trust_anchor=registry.trust_anchor,
            registered_fingerprints=registry.registered_fingerprints(conn.device_id),
            revoked_serials=registry.revoked_serials,
            reference=reference,
            nonces=conn.nonces,
            last_counter=conn.last_counter,
            policy=self.policy,
            now=self._clock.now(),
        )
        self._metrics.appraisal_latency.observe(time.perf_counter() - started)
        return result

    def _measured(self, device_id: str, result: AttestationResult) -> Measured:
        assert result.claims is not None
        measured = result.claims.measurements
        return Measured(
            measurements=tuple(
                sorted((name, str(getattr(measured, name))) for name in _DRIFT_MEASUREMENTS)
            ),
            reference=self._registry.reference_label(device_id),
        )

    async def _affirm(
        self, conn: DriverConnection, result: AttestationResult, reference: ReferenceValues
    ) -> None:
        if result.claims is not None:
            # Classify before the connection can take work: the gate reads its class.
            measured = result.claims.measurements
            conn.export_class = self._exports.classify(
                measured.num_qubits,
                measured.two_qubit_error,
                bounded=reference.calibration.two_qubit_error is not None,
            )
            conn.last_counter = (result.claims.boot_epoch, result.claims.counter)
        conn.state = LinkState.ATTESTED
        conn.attestation = result
        conn.device_key = self._device_key(conn)
        await self._exports.refresh(conn.device_id)
        self._wakeups.kick(conn.device_id)

    def _device_key(self, conn: DriverConnection) -> VerifyKey | None:
        try:
            verified = verify_device_chain(
                conn.certificate_chain,
                self._registry.trust_anchor,
                now=dt.datetime.fromtimestamp(self._clock.now(), dt.UTC),
                revoked_serials=self._registry.revoked_serials,
            )
        except CertificateError:
            return None
        return verified.key

    async def quarantine(self, device_id: str, result: AttestationResult) -> None:
        """Evidence the device itself signed failed: keep it out until an operator releases it."""
        record = self._registry.get(device_id)
        if record is None or record.status is not DeviceStatus.ACTIVE:
            return
        codes = ", ".join(r.code.value for r in result.reasons)
        await self._registry.set_status(
            "broker", device_id, DeviceStatus.QUARANTINED, f"attestation failed: {codes}"
        )
        self._metrics.quarantines.labels(device_id).inc()
        log.error("device %s quarantined: %s", device_id, codes)

    def reject(self, conn: DriverConnection, result: AttestationResult) -> None:
        """Keep a connection out of dispatch until it attests successfully again."""
        conn.state = LinkState.REJECTED
        conn.attestation = result
        conn.export_class = None

    async def _record(
        self, conn: DriverConnection, result: AttestationResult, evidence: bytes
    ) -> None:
        codes = [r.code.value for r in result.reasons]
        outcome = result.status.value.lower()
        self._metrics.attestations.labels(
            conn.device_id, outcome, codes[0] if codes else "OK"
        ).inc()
        if ReasonCode.NONCE_REPLAYED in result.codes:
            self._metrics.nonce_replays.labels(conn.device_id).inc()
        passed = result.status is AttestationStatus.AFFIRMING
        if not passed:
            self._anomalies.attestation_failed(conn.device_id, registered=True)
        record = AttestationRecord(
            device_id=conn.device_id,
            at=result.issued_at,
            status=result.status.value,
            reasons=tuple(f"{r.code.value}: {r.detail}" for r in result.reasons),
            evidence_digest=result.evidence_digest,
            evidence=evidence[:MAX_KEPT_EVIDENCE],
            expires_at=result.expires_at,
        )
        await self._registry.record_attestation(
            record, "attestation.passed" if passed else "attestation.failed"
        )
        if codes:
            log.warning("attestation of %s failed: %s", conn.device_id, ", ".join(codes))
        verdict = m.Verdict(
            affirming=passed,
            reasons=record.reasons,
            valid_for_seconds=max(0.0, result.expires_at - result.issued_at),
        )
        await self._link.send(conn.peer, verdict)

    async def drop_device(self, device_id: str, reason: str) -> None:
        """Revocation: every connection of the device is told and rejected at once."""
        for conn in self._fleet.for_device(device_id):
            conn.state = LinkState.REJECTED
            await self._link.send(conn.peer, m.Goodbye(reason=reason, code=m.GoodbyeCode.REVOKED))

    async def maintain(self, now: float) -> None:
        """Re-challenge attested connections before their results lapse; retry lost challenges."""
        ttl = self._timing.attestation_ttl_seconds
        for conn in self._fleet:
            if (
                conn.challenge_sent_at
                and now - conn.challenge_sent_at < self._timing.nonce_ttl_seconds
            ):
                continue  # a challenge is outstanding and still answerable
            if conn.state is LinkState.ATTESTED and conn.attestation is not None:
                if conn.attestation.expires_at - now <= ttl * _REFRESH_FRACTION:
                    await self.challenge(conn)
            elif conn.state is LinkState.CHALLENGED:
                await self.challenge(conn)
        for device_id in self._fleet.device_ids():
            await self._exports.refresh(device_id)  # a connection lapsed or dropped meanwhile
