"""DeviceAdminService over gRPC: transport only (see `broker.grpc.codec.admin`)."""

from __future__ import annotations

from typing import Any

from broker.devices.admin import DeviceAdmin
from broker.grpc.codec import admin as codec
from broker.grpc.interceptor import CALLER
from qtestbed.v1 import admin_pb2, admin_pb2_grpc


class DeviceAdminServicer(admin_pb2_grpc.DeviceAdminServiceServicer):
    def __init__(self, admin: DeviceAdmin) -> None:
        self._admin = admin

    async def RegisterDevice(self, request: admin_pb2.RegisterDeviceRequest, context: Any) -> Any:
        record = await self._admin.register(
            CALLER.get(), request.certificate_chain_pem, request.tier, request.model
        )
        return codec.device_to_proto(record)

    async def ListRegisteredDevices(
        self, request: admin_pb2.ListRegisteredDevicesRequest, context: Any
    ) -> Any:
        records = self._admin.devices()
        return admin_pb2.ListRegisteredDevicesResponse(
            devices=[codec.device_to_proto(r) for r in records]
        )

    async def SetReferenceValues(
        self, request: admin_pb2.SetReferenceValuesRequest, context: Any
    ) -> Any:
        values = codec.reference_from_proto(request.values)
        return codec.reference_to_proto(await self._admin.set_reference(CALLER.get(), values))

    async def ListReferenceValues(
        self, request: admin_pb2.ListReferenceValuesRequest, context: Any
    ) -> Any:
        scope = codec.scope_from_proto(request.scope)
        records = await self._admin.references(scope, request.scope_id)
        return admin_pb2.ListReferenceValuesResponse(
            versions=[codec.reference_to_proto(r) for r in records]
        )

    async def RevokeDevice(self, request: admin_pb2.RevokeDeviceRequest, context: Any) -> Any:
        record = await self._admin.revoke(CALLER.get(), request.device_id, request.reason)
        return codec.device_to_proto(record)

    async def ReleaseDevice(self, request: admin_pb2.ReleaseDeviceRequest, context: Any) -> Any:
        record = await self._admin.release(CALLER.get(), request.device_id, request.reason)
        return codec.device_to_proto(record)

    async def GetAttestationHistory(
        self, request: admin_pb2.GetAttestationHistoryRequest, context: Any
    ) -> Any:
        records = await self._admin.history(request.device_id, request.limit)
        return admin_pb2.GetAttestationHistoryResponse(
            events=[codec.attestation_to_proto(r) for r in records]
        )

    async def ExplainAccess(self, request: admin_pb2.ExplainAccessRequest, context: Any) -> Any:
        explained = self._admin.explain(
            request.principal, request.device_id, request.action, request.project
        )
        return codec.explanation_to_proto(explained)
