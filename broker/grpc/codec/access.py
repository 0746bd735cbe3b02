"""AccessAdminService messages <-> domain objects: pure functions. A message that does not
make a valid principal or project is INVALID_ARGUMENT with the model's own words."""

from __future__ import annotations

from broker.access.model import AccessError, AccessRecord, Principal, Project, Quota, parse_roles
from broker.access.registry import Recorded
from broker.devices.model import DeviceOperations, OperatingState, Window, WindowKind
from broker.devices.operations import WindowRequest
from broker.errors import invalid
from qtestbed.shared.wire import seconds, stamp, to_timestamp
from qtestbed.v1 import access_pb2 as pb

_STATE_TO_PROTO = {
    OperatingState.ONLINE: pb.OPERATING_STATE_ONLINE,
    OperatingState.DRAINING: pb.OPERATING_STATE_DRAINING,
    OperatingState.MAINTENANCE: pb.OPERATING_STATE_MAINTENANCE,
    OperatingState.RETIRED: pb.OPERATING_STATE_RETIRED,
}
_STATE_FROM_PROTO = {v: k for k, v in _STATE_TO_PROTO.items()}
_KIND_TO_PROTO = {
    WindowKind.MAINTENANCE: pb.WINDOW_KIND_MAINTENANCE,
    WindowKind.RESERVATION: pb.WINDOW_KIND_RESERVATION,
}
_KIND_FROM_PROTO = {v: k for k, v in _KIND_TO_PROTO.items()}


def quota_from_proto(q: pb.Quota) -> Quota:
    return Quota(max_active_jobs=q.max_active_jobs, max_shots_per_day=q.max_shots_per_day)


def quota_to_proto(q: Quota) -> pb.Quota:
    return pb.Quota(max_active_jobs=q.max_active_jobs, max_shots_per_day=q.max_shots_per_day)


def principal_from_proto(p: pb.Principal) -> Principal:
    try:
        return Principal(
            name=p.name,
            tier=p.tier,
            roles=parse_roles(p.roles, f"principal {p.name!r}"),
            clearance_expires_at=(
                seconds(p.clearance_expires_at) if p.HasField("clearance_expires_at") else None
            ),
            affiliation=p.affiliation,
            nationality=p.nationality,
            jurisdictions=frozenset(p.jurisdictions),
            projects=tuple(dict.fromkeys(p.projects)),
            training={name: seconds(when) for name, when in p.training.items()},
            licences=frozenset(p.licences),
            quota=quota_from_proto(p.quota),
        )
    except AccessError as exc:
        raise invalid(str(exc)) from exc


def principal_to_proto(p: Principal) -> pb.Principal:
    return pb.Principal(
        name=p.name,
        tier=p.tier,
        roles=sorted(r.value for r in p.roles),
        clearance_expires_at=to_timestamp(p.clearance_expires_at),
        affiliation=p.affiliation,
        nationality=p.nationality,
        jurisdictions=sorted(p.jurisdictions),
        projects=list(p.projects),
        training={name: stamp(when) for name, when in p.training.items()},
        licences=sorted(p.licences),
        quota=quota_to_proto(p.quota),
    )


def project_from_proto(p: pb.Project) -> Project:
    try:
        return Project(
            name=p.name,
            description=p.description,
            weight=p.weight if p.HasField("weight") else 1,
            quota=quota_from_proto(p.quota),
        )
    except AccessError as exc:
        raise invalid(str(exc)) from exc


def project_to_proto(p: Project) -> pb.Project:
    return pb.Project(
        name=p.name, description=p.description, weight=p.weight, quota=quota_to_proto(p.quota)
    )


def meta_to_proto(record: AccessRecord | None) -> pb.RecordMeta:
    if record is None:
        return pb.RecordMeta()
    return pb.RecordMeta(
        version=record.version,
        updated_at=to_timestamp(record.updated_at),
        updated_by=record.updated_by,
    )


def principal_record_to_proto(recorded: Recorded[Principal]) -> pb.PrincipalRecord:
    return pb.PrincipalRecord(
        principal=principal_to_proto(recorded.value), meta=meta_to_proto(recorded.meta)
    )


def project_record_to_proto(recorded: Recorded[Project]) -> pb.ProjectRecord:
    return pb.ProjectRecord(
        project=project_to_proto(recorded.value), meta=meta_to_proto(recorded.meta)
    )


def state_from_proto(value: int) -> OperatingState:
    state = _STATE_FROM_PROTO.get(pb.OperatingState.ValueType(value))
    if state is None:
        raise invalid("state must be online, draining, maintenance or retired")
    return state


def window_from_proto(request: pb.AddDeviceWindowRequest) -> WindowRequest:
    kind = _KIND_FROM_PROTO.get(request.kind)
    if kind is None:
        raise invalid("kind must be maintenance or reservation")
    if not (request.HasField("starts_at") and request.HasField("ends_at")):
        raise invalid("give both starts_at and ends_at")
    return WindowRequest(
        kind=kind,
        starts_at=seconds(request.starts_at),
        ends_at=seconds(request.ends_at),
        project=request.project,
        note=request.note,
    )


def window_to_proto(w: Window) -> pb.DeviceWindow:
    return pb.DeviceWindow(
        window_id=w.window_id,
        kind=_KIND_TO_PROTO[w.kind],
        starts_at=to_timestamp(w.starts_at),
        ends_at=to_timestamp(w.ends_at),
        project=w.project,
        note=w.note,
        created_by=w.created_by,
    )


def operations_to_proto(
    ops: DeviceOperations, effective: OperatingState, meta: AccessRecord | None, now: float
) -> pb.DeviceOperations:
    return pb.DeviceOperations(
        device_id=ops.device_id,
        state=_STATE_TO_PROTO[ops.state],
        effective_state=_STATE_TO_PROTO[effective],
        reason=ops.reason,
        windows=[window_to_proto(w) for w in ops.windows if w.ends_at > now],
        meta=meta_to_proto(meta),
    )
