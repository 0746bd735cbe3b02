"""The operator's access API (AccessAdminService): protobuf in and out, the registry does the
work. Roles are checked at the edge (`broker.roles`); this module only translates.
"""

from __future__ import annotations

from typing import Any

from broker.access.model import AccessRecord, Principal, Project, Quota, RecordKind, Role
from broker.access.registry import AccessRegistry
from broker.devices.model import DeviceOperations, OperatingState, Window, WindowKind
from broker.devices.registry import DeviceRegistry
from broker.errors import invalid, not_found
from broker.grpc.interceptor import CALLER
from qtestbed.shared.wire import seconds, stamp, to_timestamp
from qtestbed.v1 import access_pb2 as pb
from qtestbed.v1 import access_pb2_grpc

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
        roles = frozenset(Role(r) for r in p.roles)
    except ValueError as exc:
        raise invalid(f"{exc}; roles are researcher, operator, security") from exc
    return Principal(
        name=p.name,
        tier=p.tier,
        roles=roles,
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


def meta_to_proto(record: AccessRecord | None) -> pb.RecordMeta:
    if record is None:
        return pb.RecordMeta()
    return pb.RecordMeta(
        version=record.version,
        updated_at=to_timestamp(record.updated_at),
        updated_by=record.updated_by,
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


class AccessAdminServicer(access_pb2_grpc.AccessAdminServiceServicer):
    def __init__(self, access: AccessRegistry, registry: DeviceRegistry) -> None:
        self.access = access
        self.registry = registry

    def _principal_record(self, name: str) -> pb.PrincipalRecord:
        principal = self.access.principal(name)
        if principal is None:
            raise not_found("principal", name)
        return pb.PrincipalRecord(
            principal=principal_to_proto(principal),
            meta=meta_to_proto(self.access.record(RecordKind.PRINCIPAL, name)),
        )

    def _project_record(self, name: str) -> pb.ProjectRecord:
        project = self.access.project(name)
        if project is None:
            raise not_found("project", name)
        return pb.ProjectRecord(
            project=pb.Project(
                name=project.name,
                description=project.description,
                weight=project.weight,
                quota=quota_to_proto(project.quota),
            ),
            meta=meta_to_proto(self.access.record(RecordKind.PROJECT, name)),
        )

    def _operations(self, ops: DeviceOperations) -> pb.DeviceOperations:
        now = self.access.now()
        device = self.registry.get(ops.device_id)
        effective = (
            self.access.operating_state(device, now)
            if device is not None
            else ops.effective_state(now)
        )
        return pb.DeviceOperations(
            device_id=ops.device_id,
            state=_STATE_TO_PROTO[ops.state],
            effective_state=_STATE_TO_PROTO[effective],
            reason=ops.reason,
            windows=[window_to_proto(w) for w in ops.windows if w.ends_at > now],
            meta=meta_to_proto(self.access.record(RecordKind.DEVICE, ops.device_id)),
        )

    async def PutPrincipal(self, request: pb.PutPrincipalRequest, context: Any) -> Any:
        principal = principal_from_proto(request.principal)
        await self.access.put_principal(CALLER.get(), principal, request.expected_version)
        return self._principal_record(principal.name)

    async def GetPrincipal(self, request: pb.GetPrincipalRequest, context: Any) -> Any:
        return self._principal_record(request.name)

    async def ListPrincipals(self, request: pb.ListPrincipalsRequest, context: Any) -> Any:
        names = sorted(self.access.snapshot.principals)
        return pb.ListPrincipalsResponse(principals=[self._principal_record(n) for n in names])

    async def DeletePrincipal(self, request: pb.DeletePrincipalRequest, context: Any) -> Any:
        await self.access.delete_principal(CALLER.get(), request.name, request.expected_version)
        return pb.DeletePrincipalResponse()

    async def PutProject(self, request: pb.PutProjectRequest, context: Any) -> Any:
        p = request.project
        project = Project(
            name=p.name,
            description=p.description,
            weight=p.weight or 1,
            quota=quota_from_proto(p.quota),
        )
        await self.access.put_project(CALLER.get(), project, request.expected_version)
        return self._project_record(project.name)

    async def ListProjects(self, request: pb.ListProjectsRequest, context: Any) -> Any:
        names = sorted(self.access.snapshot.projects)
        return pb.ListProjectsResponse(projects=[self._project_record(n) for n in names])

    async def SetDeviceState(self, request: pb.SetDeviceStateRequest, context: Any) -> Any:
        state = _STATE_FROM_PROTO.get(request.state)
        if state is None:
            raise invalid("state must be online, draining, maintenance or retired")
        ops = await self.access.set_device_state(
            CALLER.get(), request.device_id, state, request.reason
        )
        return self._operations(ops)

    async def AddDeviceWindow(self, request: pb.AddDeviceWindowRequest, context: Any) -> Any:
        kind = _KIND_FROM_PROTO.get(request.kind)
        if kind is None:
            raise invalid("kind must be maintenance or reservation")
        if not (request.HasField("starts_at") and request.HasField("ends_at")):
            raise invalid("give both starts_at and ends_at")
        ops, _ = await self.access.add_window(
            CALLER.get(),
            request.device_id,
            kind=kind,
            starts_at=seconds(request.starts_at),
            ends_at=seconds(request.ends_at),
            project=request.project,
            note=request.note,
        )
        return self._operations(ops)

    async def RemoveDeviceWindow(self, request: pb.RemoveDeviceWindowRequest, context: Any) -> Any:
        ops = await self.access.remove_window(CALLER.get(), request.device_id, request.window_id)
        return self._operations(ops)

    async def ListDeviceOperations(
        self, request: pb.ListDeviceOperationsRequest, context: Any
    ) -> Any:
        return pb.ListDeviceOperationsResponse(
            devices=[
                self._operations(self.access.operations(d.device_id)) for d in self.registry.all()
            ]
        )
