"""Thin gRPC servicers for the operator (DeviceAdminService) and security (AuditService) APIs."""

from __future__ import annotations

from typing import Any

from broker.devices.admin import AdminService
from broker.grpc.codec import admin as codec
from broker.grpc.interceptor import CALLER
from qtestbed.v1 import admin_pb2, admin_pb2_grpc


class DeviceAdminServicer(admin_pb2_grpc.DeviceAdminServiceServicer):
    def __init__(self, service: AdminService) -> None:
        self.service = service

    async def RegisterDevice(self, request: admin_pb2.RegisterDeviceRequest, context: Any) -> Any:
        record = await self.service.register(
            CALLER.get(), request.certificate_chain_pem, request.tier, request.model
        )
        return codec.device_to_proto(record)

    async def ListRegisteredDevices(
        self, request: admin_pb2.ListRegisteredDevicesRequest, context: Any
    ) -> Any:
        records = await self.service.devices(CALLER.get())
        return admin_pb2.ListRegisteredDevicesResponse(
            devices=[codec.device_to_proto(r) for r in records]
        )

    async def SetReferenceValues(
        self, request: admin_pb2.SetReferenceValuesRequest, context: Any
    ) -> Any:
        values = codec.reference_from_proto(request.values)
        return codec.reference_to_proto(await self.service.set_reference(CALLER.get(), values))

    async def ListReferenceValues(
        self, request: admin_pb2.ListReferenceValuesRequest, context: Any
    ) -> Any:
        scope = codec.scope_from_proto(request.scope)
        records = await self.service.references(CALLER.get(), scope, request.scope_id)
        return admin_pb2.ListReferenceValuesResponse(
            versions=[codec.reference_to_proto(r) for r in records]
        )

    async def RevokeDevice(self, request: admin_pb2.RevokeDeviceRequest, context: Any) -> Any:
        record = await self.service.revoke(CALLER.get(), request.device_id, request.reason)
        return codec.device_to_proto(record)

    async def ReleaseDevice(self, request: admin_pb2.ReleaseDeviceRequest, context: Any) -> Any:
        record = await self.service.release(CALLER.get(), request.device_id, request.reason)
        return codec.device_to_proto(record)

    async def GetAttestationHistory(
        self, request: admin_pb2.GetAttestationHistoryRequest, context: Any
    ) -> Any:
        records = await self.service.history(CALLER.get(), request.device_id, request.limit)
        return admin_pb2.GetAttestationHistoryResponse(
            events=[codec.attestation_to_proto(r) for r in records]
        )

    async def ExplainAccess(self, request: admin_pb2.ExplainAccessRequest, context: Any) -> Any:
        explained = self.service.explain(
            CALLER.get(), request.principal, request.device_id, request.action, request.project
        )
        return admin_pb2.ExplainAccessResponse(
            allowed=explained.allowed,
            policy_ids=list(explained.policy_ids),
            reasons=list(explained.reasons),
            errors=list(explained.errors),
            requirements=[
                admin_pb2.PolicyRequirement(rule_id=r.rule_id, met=r.met, text=r.text)
                for r in explained.requirements
            ],
        )


class AuditServicer(admin_pb2_grpc.AuditServiceServicer):
    def __init__(self, service: AdminService) -> None:
        self.service = service

    async def StreamAudit(self, request: admin_pb2.StreamAuditRequest, context: Any) -> Any:
        async for entry in self.service.stream_audit(
            CALLER.get(), request.after_seq, request.follow
        ):
            yield codec.audit_to_proto(entry)

    async def ListCheckpoints(self, request: admin_pb2.ListCheckpointsRequest, context: Any) -> Any:
        checkpoints = await self.service.checkpoints(CALLER.get())
        return admin_pb2.ListCheckpointsResponse(
            checkpoints=[codec.checkpoint_to_proto(c) for c in checkpoints]
        )
