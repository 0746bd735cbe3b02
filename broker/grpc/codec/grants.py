"""AccessRequestService messages <-> domain objects: pure functions."""

from __future__ import annotations

from broker.access.model import AccessRequest, Elevation, RequestState
from broker.access.requests import Filing
from broker.errors import invalid
from qtestbed.shared.wire import to_timestamp
from qtestbed.v1 import grants_pb2 as pb

_KINDS = {
    Elevation.TIER: pb.ELEVATION_KIND_TIER,
    Elevation.ROLE: pb.ELEVATION_KIND_ROLE,
    Elevation.LICENCE: pb.ELEVATION_KIND_LICENCE,
    Elevation.DEVICE: pb.ELEVATION_KIND_DEVICE,
}
_KIND_OF = {wire: kind for kind, wire in _KINDS.items()}
_STATES = {
    RequestState.PENDING: pb.ACCESS_REQUEST_STATE_PENDING,
    RequestState.GRANTED: pb.ACCESS_REQUEST_STATE_GRANTED,
    RequestState.DENIED: pb.ACCESS_REQUEST_STATE_DENIED,
    RequestState.EXPIRED: pb.ACCESS_REQUEST_STATE_EXPIRED,
    RequestState.REVOKED: pb.ACCESS_REQUEST_STATE_REVOKED,
}


def filing_from_proto(m: pb.RequestAccessRequest) -> Filing:
    kind = _KIND_OF.get(m.kind)
    if kind is None:
        raise invalid("say what the request is for: a tier, a role, a licence or a device")
    return Filing(
        principal=m.principal,
        kind=kind,
        value=m.value,
        duration_seconds=m.duration_seconds,
        reason=m.reason,
        break_glass=m.break_glass,
    )


def access_request_to_proto(r: AccessRequest) -> pb.AccessRequest:
    return pb.AccessRequest(
        request_id=r.request_id,
        principal=r.principal,
        requested_by=r.requested_by,
        kind=_KINDS[r.kind],
        value=r.value,
        duration_seconds=r.duration_seconds,
        reason=r.reason,
        break_glass=r.break_glass,
        state=_STATES[r.state],
        approvals=[
            pb.Approval(approver=a.approver, at=to_timestamp(a.at), reason=a.reason)
            for a in r.approvals
        ],
        created_at=to_timestamp(r.created_at),
        decided_at=to_timestamp(r.decided_at),
        expires_at=to_timestamp(r.expires_at),
        decided_by=r.decided_by,
        decision_reason=r.decision_reason,
    )
