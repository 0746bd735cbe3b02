"""AuditService over gRPC: transport only (see `broker.grpc.codec.admin`)."""

from __future__ import annotations

from typing import Any

from broker.audit.consistency import ConsistencyProver
from broker.audit.service import AuditReader
from broker.audit.witnesses import CosignatureDesk
from broker.grpc.codec import admin as codec
from broker.grpc.interceptor import CALLER
from qtestbed.v1 import admin_pb2, admin_pb2_grpc


class AuditServicer(admin_pb2_grpc.AuditServiceServicer):
    def __init__(
        self, reader: AuditReader, desk: CosignatureDesk, prover: ConsistencyProver
    ) -> None:
        self._reader = reader
        self._desk = desk
        self._prover = prover

    async def StreamAudit(self, request: admin_pb2.StreamAuditRequest, context: Any) -> Any:
        async for entry in self._reader.stream(request.after_seq, request.follow):
            yield codec.audit_to_proto(entry)

    async def ListCheckpoints(self, request: admin_pb2.ListCheckpointsRequest, context: Any) -> Any:
        checkpoints = await self._desk.checkpoints(min_tree_size=request.min_tree_size)
        return admin_pb2.ListCheckpointsResponse(
            checkpoints=[codec.checkpoint_to_proto(c, cosigs) for c, cosigs in checkpoints]
        )

    async def GetConsistencyProof(
        self, request: admin_pb2.GetConsistencyProofRequest, context: Any
    ) -> Any:
        hashes = await self._prover.proof(request.first_size, request.second_size)
        return admin_pb2.ConsistencyProof(
            first_size=request.first_size, second_size=request.second_size, hashes=hashes
        )

    async def AddCosignature(self, request: admin_pb2.AddCosignatureRequest, context: Any) -> Any:
        witness, added = await self._desk.add(CALLER.get(), request.tree_size, request.envelope)
        return admin_pb2.AddCosignatureResponse(
            witness=witness, tree_size=request.tree_size, added=added
        )
