"""AccessAdminService over gRPC: transport only. Principals and projects go to the access
registry, device states and windows to the device schedule (see `broker.grpc.codec.access`)."""

from __future__ import annotations

from typing import Any

from broker.access.registry import AccessRegistry
from broker.clock import Clock
from broker.devices.model import DeviceOperations
from broker.devices.operations import DeviceSchedule
from broker.devices.registry import DeviceRegistry
from broker.grpc.codec import access as codec
from broker.grpc.interceptor import CALLER
from qtestbed.v1 import access_pb2 as pb
from qtestbed.v1 import access_pb2_grpc


class AccessAdminServicer(access_pb2_grpc.AccessAdminServiceServicer):
    def __init__(
        self,
        *,
        access: AccessRegistry,
        schedule: DeviceSchedule,
        registry: DeviceRegistry,
        clock: Clock,
    ) -> None:
        self._access = access
        self._schedule = schedule
        self._registry = registry
        self._clock = clock

    def _operations(self, ops: DeviceOperations) -> pb.DeviceOperations:
        now = self._clock.now()
        device = self._registry.get(ops.device_id)
        effective = (
            self._schedule.state(device).operating_state(now)
            if device is not None
            else ops.effective_state(now)
        )
        meta = self._schedule.record(ops.device_id)
        return codec.operations_to_proto(ops, effective, meta, now)

    async def PutPrincipal(self, request: pb.PutPrincipalRequest, context: Any) -> Any:
        principal = codec.principal_from_proto(request.principal)
        stored = await self._access.put_principal(CALLER.get(), principal, request.expected_version)
        return codec.principal_record_to_proto(stored)

    async def GetPrincipal(self, request: pb.GetPrincipalRequest, context: Any) -> Any:
        return codec.principal_record_to_proto(self._access.principal_record(request.name))

    async def ListPrincipals(self, request: pb.ListPrincipalsRequest, context: Any) -> Any:
        return pb.ListPrincipalsResponse(
            principals=[codec.principal_record_to_proto(r) for r in self._access.principals()]
        )

    async def DeletePrincipal(self, request: pb.DeletePrincipalRequest, context: Any) -> Any:
        await self._access.delete_principal(CALLER.get(), request.name, request.expected_version)
        return pb.DeletePrincipalResponse()

    async def PutProject(self, request: pb.PutProjectRequest, context: Any) -> Any:
        project = codec.project_from_proto(request.project)
        stored = await self._access.put_project(CALLER.get(), project, request.expected_version)
        return codec.project_record_to_proto(stored)

    async def ListProjects(self, request: pb.ListProjectsRequest, context: Any) -> Any:
        return pb.ListProjectsResponse(
            projects=[codec.project_record_to_proto(r) for r in self._access.projects()]
        )

    async def SetDeviceState(self, request: pb.SetDeviceStateRequest, context: Any) -> Any:
        state = codec.state_from_proto(request.state)
        ops = await self._schedule.set_state(CALLER.get(), request.device_id, state, request.reason)
        return self._operations(ops)

    async def AddDeviceWindow(self, request: pb.AddDeviceWindowRequest, context: Any) -> Any:
        window = codec.window_from_proto(request)
        ops, _ = await self._schedule.add_window(CALLER.get(), request.device_id, window)
        return self._operations(ops)

    async def RemoveDeviceWindow(self, request: pb.RemoveDeviceWindowRequest, context: Any) -> Any:
        ops = await self._schedule.remove_window(CALLER.get(), request.device_id, request.window_id)
        return self._operations(ops)

    async def ListDeviceOperations(
        self, request: pb.ListDeviceOperationsRequest, context: Any
    ) -> Any:
        return pb.ListDeviceOperationsResponse(
            devices=[
                self._operations(self._schedule.operations(d.device_id))
                for d in self._registry.all()
            ]
        )
