"""DeviceService messages <-> domain objects: pure functions."""

from __future__ import annotations

from attestation.appraisal import AttestationStatus
from broker.devices.directory import DeviceView
from qtestbed.shared.wire import to_timestamp
from qtestbed.v1 import devices_pb2

_ATTESTATION_TO_PROTO = {
    None: devices_pb2.ATTESTATION_STATUS_NONE,
    AttestationStatus.AFFIRMING: devices_pb2.ATTESTATION_STATUS_AFFIRMING,
    AttestationStatus.WARNING: devices_pb2.ATTESTATION_STATUS_WARNING,
    AttestationStatus.CONTRAINDICATED: devices_pb2.ATTESTATION_STATUS_CONTRAINDICATED,
}


def device_to_proto(view: DeviceView) -> devices_pb2.Device:
    profile = view.profile
    return devices_pb2.Device(
        device_id=view.device.device_id,
        tier=view.device.tier,
        num_qubits=view.num_qubits,
        basis_gates=list(profile.basis_gates) if profile else [],
        coupling_map=[
            devices_pb2.CouplingEdge(control=a, target=b)
            for a, b in (profile.coupling_map if profile else ())
        ],
        backend=profile.backend if profile else "",
        connected=view.connected > 0,
        attestation_status=_ATTESTATION_TO_PROTO[view.attestation],
        attestation_reasons=list(view.attestation_reasons),
        attested_until=to_timestamp(view.attested_until),
        queue_depth=view.queue_depth,
        available=view.available,
        calibration_digest=",".join(view.calibration_digests),
        status=view.device.status.value,
        status_reason=view.device.status_reason,
        export_class=view.export_class,
        export_reason=view.export_reason,
        operating_state=view.operating_state,
        operating_note=view.operating_note,
        two_qubit_error=view.two_qubit_error or 0.0,
    )
