"""The broker as RATS Verifier front-end: challenges drivers, appraises their evidence, and keeps
each connection's attestation result current (re-challenging before it expires).

Only a connection whose latest result affirms and has not expired is dispatchable; every
verdict is audited and counted.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable

from attestation.appraisal import (
    AppraisalPolicy,
    AttestationResult,
    AttestationStatus,
    ReasonCode,
    appraise,
)
from attestation.keys import VerifyKey
from attestation.nonces import NonceIssuer
from attestation.pki import CertificateError, verify_device_chain
from broker.anomaly.detectors import Measured
from broker.anomaly.monitor import AnomalyMonitor
from broker.devices.model import AttestationRecord, DeviceStatus
from broker.devices.registry import DeviceRegistry
from broker.jobs.ledger import JobLedger
from broker.link.fleet import DeviceProfile, DriverConnection, Fleet, LinkState
from broker.link.socket import DriverLink
from broker.settings import TimingSettings
from qtestbed.v1 import driver_link_pb2 as link_pb

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
        link: DriverLink,
        fleet: Fleet,
        registry: DeviceRegistry,
        ledger: JobLedger,
        timing: TimingSettings,
        on_attested: Callable[[str], None],
        anomalies: AnomalyMonitor,
    ) -> None:
        self.anomalies = anomalies
        self.link = link
        self.fleet = fleet
        self.registry = registry
        self.ledger = ledger
        self.metrics = ledger.metrics
        self.timing = timing
        self.on_attested = on_attested
        self.nonces = NonceIssuer(ttl_seconds=timing.nonce_ttl_seconds)
        self.policy = AppraisalPolicy(
            max_evidence_age_seconds=timing.max_evidence_age_seconds,
            max_clock_skew_seconds=timing.max_clock_skew_seconds,
            result_ttl_seconds=timing.attestation_ttl_seconds,
        )

    async def on_hello(self, identity: bytes, hello: link_pb.Hello) -> None:
        now = self.ledger.clock.now()
        device_id = hello.device_id
        if self.registry.get(device_id) is None:
            await self._refuse_unknown(identity, device_id)
            return
        profile = DeviceProfile(
            num_qubits=hello.num_qubits,
            basis_gates=tuple(hello.basis_gates),
            coupling_map=tuple((e.control, e.target) for e in hello.coupling_map),
            backend=hello.backend,
            driver_build=hello.driver_build,
        )
        conn = DriverConnection(
            identity=identity,
            device_id=device_id,
            profile=profile,
            last_seen=now,
            certificate_chain=hello.certificate_chain,
        )
        self.fleet.add(conn)
        self.metrics.drivers.labels(device_id).inc()
        log.info("driver for %s connected (%s)", device_id, identity.hex())
        await self.challenge(conn)

    async def _refuse_unknown(self, identity: bytes, device_id: str) -> None:
        # The label is fixed: unregistered ids are attacker-chosen and must not grow the metrics.
        self.metrics.attestations.labels("unregistered", "contraindicated", "UNKNOWN_DEVICE").inc()
        self.anomalies.attestation_failed(device_id[:128], registered=False)
        detail = {"reasons": ["UNKNOWN_DEVICE"], "details": ["device is not registered"]}
        await self.ledger.audit(
            self.ledger.event("attestation.failed", "broker", device_id[:128], detail)
        )
        goodbye = link_pb.Goodbye(
            reason=f"device {device_id!r} is not registered at this facility; an operator must "
            "register its certificate (qtestbed device register)"
        )
        await self.link.send(identity, link_pb.LinkMessage(goodbye=goodbye))

    async def challenge(self, conn: DriverConnection) -> None:
        now = self.ledger.clock.now()
        nonce = self.nonces.issue(conn.device_id, now)
        conn.challenge_sent_at = now
        if conn.state is not LinkState.ATTESTED:
            conn.state = LinkState.CHALLENGED
        msg = link_pb.Challenge(nonce=nonce, deadline_seconds=self.timing.nonce_ttl_seconds)
        await self.link.send(conn.identity, link_pb.LinkMessage(challenge=msg))

    async def on_evidence(self, conn: DriverConnection, evidence: link_pb.EvidenceMessage) -> None:
        started = time.perf_counter()
        now = self.ledger.clock.now()
        result = appraise(
            evidence.envelope,
            expected_device_id=conn.device_id,
            certificate_chain=conn.certificate_chain,
            trust_anchor=self.registry.trust_anchor,
            registered_fingerprints=self.registry.registered_fingerprints(conn.device_id),
            revoked_serials=self.registry.revoked_serials,
            reference=self.registry.reference_for(conn.device_id),
            nonces=self.nonces,
            last_counter=conn.last_counter,
            policy=self.policy,
            now=now,
        )
        self.metrics.appraisal_latency.observe(time.perf_counter() - started)
        conn.challenge_sent_at = 0.0
        await self._record(conn, result, evidence.envelope)
        if result.authenticated and result.claims is not None:
            measured = result.claims.measurements
            self.anomalies.measured(
                conn.device_id,
                Measured(
                    measurements=tuple(
                        sorted((name, str(getattr(measured, name))) for name in _DRIFT_MEASUREMENTS)
                    ),
                    reference=self.registry.reference_label(conn.device_id),
                ),
            )
        if result.affirming(now):
            if result.claims is not None:
                # Classify before the connection can take work: the gate reads the class.
                measured = result.claims.measurements
                await self.registry.classify_export(
                    conn.device_id, measured.num_qubits, measured.two_qubit_error
                )
                conn.last_counter = (result.claims.boot_epoch, result.claims.counter)
            conn.state = LinkState.ATTESTED
            conn.attestation = result
            conn.device_key = self._device_key(conn)
            self.on_attested(conn.device_id)
            return
        self.reject(conn, result)
        if result.authenticated:
            await self.quarantine(conn.device_id, result)

    def _device_key(self, conn: DriverConnection) -> VerifyKey | None:
        try:
            verified = verify_device_chain(
                conn.certificate_chain,
                self.registry.trust_anchor,
                now=dt.datetime.fromtimestamp(self.ledger.clock.now(), dt.UTC),
                revoked_serials=self.registry.revoked_serials,
            )
        except CertificateError:
            return None
        return verified.key

    async def quarantine(self, device_id: str, result: AttestationResult) -> None:
        """Evidence the device itself signed failed: keep it out until an operator releases it."""
        record = self.registry.get(device_id)
        if record is None or record.status is not DeviceStatus.ACTIVE:
            return
        codes = ", ".join(r.code.value for r in result.reasons)
        await self.registry.set_status(
            "broker", device_id, DeviceStatus.QUARANTINED, f"attestation failed: {codes}"
        )
        self.metrics.quarantines.labels(device_id).inc()
        log.error("device %s quarantined: %s", device_id, codes)

    def reject(self, conn: DriverConnection, result: AttestationResult) -> None:
        """Keep a connection out of dispatch until it attests successfully again."""
        conn.state = LinkState.REJECTED
        conn.attestation = result

    async def _record(
        self, conn: DriverConnection, result: AttestationResult, evidence: bytes
    ) -> None:
        codes = [r.code.value for r in result.reasons]
        outcome = result.status.value.lower()
        self.metrics.attestations.labels(conn.device_id, outcome, codes[0] if codes else "OK").inc()
        if ReasonCode.NONCE_REPLAYED in result.codes:
            self.metrics.nonce_replays.labels(conn.device_id).inc()
        passed = result.status is AttestationStatus.AFFIRMING
        if not passed:
            self.anomalies.attestation_failed(conn.device_id, registered=True)
        record = AttestationRecord(
            device_id=conn.device_id,
            at=result.issued_at,
            status=result.status.value,
            reasons=tuple(f"{r.code.value}: {r.detail}" for r in result.reasons),
            evidence_digest=result.evidence_digest,
            evidence=evidence[:MAX_KEPT_EVIDENCE],
            expires_at=result.expires_at,
        )
        await self.registry.record_attestation(
            record, "attestation.passed" if passed else "attestation.failed"
        )
        if codes:
            log.warning("attestation of %s failed: %s", conn.device_id, ", ".join(codes))
        verdict = link_pb.AttestationVerdict(
            affirming=passed,
            reasons=list(record.reasons),
            valid_for_seconds=max(0.0, result.expires_at - result.issued_at),
        )
        await self.link.send(conn.identity, link_pb.LinkMessage(verdict=verdict))

    async def drop_device(self, device_id: str, reason: str) -> None:
        """Revocation: every connection of the device is told and rejected at once."""
        for conn in self.fleet.for_device(device_id):
            conn.state = LinkState.REJECTED
            bye = link_pb.Goodbye(reason=reason)
            await self.link.send(conn.identity, link_pb.LinkMessage(goodbye=bye))

    async def maintain(self, now: float) -> None:
        """Re-challenge attested connections before their results lapse; retry lost challenges."""
        ttl = self.timing.attestation_ttl_seconds
        for conn in self.fleet:
            if (
                conn.challenge_sent_at
                and now - conn.challenge_sent_at < self.timing.nonce_ttl_seconds
            ):
                continue  # a challenge is outstanding and still answerable
            if conn.state is LinkState.ATTESTED and conn.attestation is not None:
                if conn.attestation.expires_at - now <= ttl * _REFRESH_FRACTION:
                    await self.challenge(conn)
            elif conn.state is LinkState.CHALLENGED:
                await self.challenge(conn)
