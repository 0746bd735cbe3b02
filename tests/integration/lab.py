"""A facility under attack, for the integration tests: a started broker, the facility's own
CA and device key, researcher and operator clients, and scripted Attesters on its driver link."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from google.protobuf.timestamp_pb2 import Timestamp

from attestation.evidence import Measurements
from attestation.keys import SigningKey, load_private_key
from attestation.pki import cert_from_pem, cert_to_pem, device_uri, issue_certificate
from drivers.config import load_driver_config
from drivers.measure import measure
from qtestbed.cli.demo import ghz_qasm2
from qtestbed.shared.linkkeys import authorize_client, create_keypair
from qtestbed.testing import LocalFacility, eventually
from qtestbed.v1 import admin_pb2, devices_pb2, jobs_pb2
from tests.integration.attester import Attester, LinkEndpoint
from tests.integration.support import last_audit_seq, scrape, state_name

DEVICE = "sim-open"


def reason_codes(reasons: Iterable[object]) -> list[str]:
    """Reason codes from "CODE: detail" strings (verdicts, audit details, device views)."""
    return [str(r).split(":", 1)[0] for r in reasons]


def _timestamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


@dataclass(frozen=True, kw_only=True, slots=True)
class Marks:
    """Where the audit log and the metrics stood before a case ran."""

    seq: int
    metrics: str


class Lab:
    """A facility with a started broker, and the tools a test needs to attack it."""

    def __init__(self, facility: LocalFacility) -> None:
        self.facility = facility
        address = facility.start_broker().link
        self.alice = facility.client("alice")
        self.olivia = facility.client("olivia")
        config = load_driver_config(facility.root / "drivers" / f"{DEVICE}.toml")
        self.address = address
        self.broker_key = config.broker_link_key
        self.endpoint = LinkEndpoint(
            address=address, secret_key=config.link_secret_key, broker_key=config.broker_link_key
        )
        self.device_key = load_private_key(config.device_key)
        self.chain = config.device_certificate.read_bytes()
        self.measurements = measure(config.device, config.firmware)
        self.ca_key = load_private_key(facility.offline_ca / "ca.key")
        self.ca_cert = cert_from_pem((facility.root / "ca" / "ca.pem").read_bytes())
        self.job: jobs_pb2.Job | None = None
        self._attesters: list[Attester] = []

    def link_key_for(self, device_id: str, name: str = "link") -> LinkEndpoint:
        """The driver link with a link key authorised for `device_id`: the facility's own for
        its devices; for any other device or `name`, a new key, authorised now (the broker
        reloads its keys)."""
        root = self.facility.root
        secret = root / "drivers" / f"{device_id}-{name}.key_secret"
        if not secret.exists():
            public, secret = create_keypair(root / "drivers", f"{device_id}-{name}")
            authorize_client(public, root / "link" / "clients", device_id=device_id)
            embedded = self.facility.embedded
            assert embedded is not None
            assert embedded.broker is not None
            assert embedded.run(embedded.broker.reload())
        return LinkEndpoint(address=self.address, secret_key=secret, broker_key=self.broker_key)

    def attester(
        self,
        *,
        device_id: str = DEVICE,
        chain: bytes | None = None,
        key: SigningKey | None = None,
        measurements: Measurements | None = None,
        endpoint: LinkEndpoint | None = None,
        route: bytes | None = None,
    ) -> Attester:
        """A connection that has said Hello, with the link key authorised for `device_id`
        unless `endpoint` says otherwise; it signs with the device's own key by default."""
        attester = Attester(
            endpoint or self.link_key_for(device_id),
            device_id=device_id,
            chain=self.chain if chain is None else chain,
            key=key or self.device_key,
            measurements=measurements or self.measurements,
            route=route,
        )
        self._attesters.append(attester)
        return attester

    def certificate(
        self, device_id: str, *, key: SigningKey, start: dt.datetime, days: int
    ) -> bytes:
        """A device certificate from this facility's own root CA (offline ca.key)."""
        cert = issue_certificate(
            ca_key=self.ca_key,
            ca_cert=self.ca_cert,
            subject_cn=device_id,
            public_key=key.public_key,
            now=start,
            days=days,
            uris=[device_uri(device_id)],
        )
        return cert_to_pem(cert)

    def queue_job(self) -> jobs_pb2.Job:
        self.job = self.alice.submit(ghz_qasm2(3), device_id=DEVICE, shots=100).job
        assert state_name(self.job) == "QUEUED"
        return self.job

    def device(self) -> devices_pb2.Device:
        return next(d for d in self.alice.devices() if d.device_id == DEVICE)

    def registered(self) -> admin_pb2.RegisteredDevice:
        reply = self.olivia.call(
            self.olivia.admin.ListRegisteredDevices, admin_pb2.ListRegisteredDevicesRequest()
        )
        found: admin_pb2.RegisteredDevice = next(d for d in reply.devices if d.device_id == DEVICE)
        return found

    def revoke(self) -> admin_pb2.RegisteredDevice:
        request = admin_pb2.RevokeDeviceRequest(device_id=DEVICE, reason="key compromised")
        record: admin_pb2.RegisteredDevice = self.olivia.call(
            self.olivia.admin.RevokeDevice, request
        )
        return record

    def release(self) -> admin_pb2.RegisteredDevice:
        request = admin_pb2.ReleaseDeviceRequest(device_id=DEVICE, reason="firmware restored")
        record: admin_pb2.RegisteredDevice = self.olivia.call(
            self.olivia.admin.ReleaseDevice, request
        )
        return record

    def publish_reference(self, *, not_before: float, not_after: float) -> int:
        """Publish the current device-scope values again, valid only in [not_before, not_after)."""
        admin = self.olivia.admin
        scope = admin_pb2.REFERENCE_SCOPE_DEVICE
        listed = self.olivia.call(
            admin.ListReferenceValues,
            admin_pb2.ListReferenceValuesRequest(scope=scope, scope_id=DEVICE),
        )
        current = listed.versions[0]
        values = admin_pb2.ReferenceValues(
            scope=scope,
            scope_id=DEVICE,
            firmware=current.firmware,
            control_software=current.control_software,
            driver_build=current.driver_build,
            calibration_digest=current.calibration_digest,
            num_qubits=current.num_qubits,
            not_before=_timestamp(not_before),
            not_after=_timestamp(not_after),
        )
        request = admin_pb2.SetReferenceValuesRequest(values=values)
        version: int = self.olivia.call(admin.SetReferenceValues, request).version
        return version

    def publish_calibration(
        self, *, num_qubits: int | None = None, **windows: admin_pb2.CalibrationWindow
    ) -> int:
        """Publish the current device-scope values again with these calibration windows (and
        qubit count); returns the new version."""
        admin = self.olivia.admin
        scope = admin_pb2.REFERENCE_SCOPE_DEVICE
        listed = self.olivia.call(
            admin.ListReferenceValues,
            admin_pb2.ListReferenceValuesRequest(scope=scope, scope_id=DEVICE),
        )
        values = admin_pb2.ReferenceValues()
        values.CopyFrom(listed.versions[0])
        values.num_qubits = num_qubits or values.num_qubits
        for figure, window in windows.items():
            getattr(values, figure).CopyFrom(window)
        request = admin_pb2.SetReferenceValuesRequest(values=values)
        version: int = self.olivia.call(admin.SetReferenceValues, request).version
        return version

    def marks(self) -> Marks:
        return Marks(seq=last_audit_seq(self.facility), metrics=scrape(self.facility))

    def close_attesters(self) -> None:
        while self._attesters:
            self._attesters.pop().close()

    def reset(self) -> None:
        """Leave the shared facility as the next case expects it: nobody connected, no job."""
        self.close_attesters()
        eventually(lambda: not self.device().connected, timeout=10, what="attesters to leave")
        if self.job is not None and state_name(self.alice.get_job(self.job.job_id)) == "QUEUED":
            self.alice.cancel(self.job.job_id, "corpus case done")
        self.job = None
