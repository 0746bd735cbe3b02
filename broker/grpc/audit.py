"""AuditService over gRPC: transport only (see `broker.grpc.codec.admin`)."""

from __future__ import annotations

from typing import Any

from broker.audit.service import AuditReader
from broker.grpc.codec import admin as codec
from qtestbed.v1 import admin_pb2, admin_pb2_grpc


class AuditServicer(admin_pb2_grpc.AuditServiceServicer):
    def __init__(self, reader: AuditReader) -> None:
        self._reader = reader

    async def StreamAudit(self, request: admin_pb2.StreamAuditRequest, context: Any) -> Any:
        async for entry in self._reader.stream(request.after_seq, request.follow):
            yield codec.audit_to_proto(entry)

    async def ListCheckpoints(self, request: admin_pb2.ListCheckpointsRequest, context: Any) -> Any:
        checkpoints = await self._reader.checkpoints()
        return admin_pb2.ListCheckpointsResponse(
            checkpoints=[codec.checkpoint_to_proto(c) for c in checkpoints]
        )
