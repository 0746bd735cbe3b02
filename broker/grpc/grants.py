"""AccessRequestService over gRPC: transport only (see `broker.grpc.codec.grants`)."""

from __future__ import annotations

from typing import Any

from broker.access.requests import AccessRequests
from broker.grpc.codec.grants import access_request_to_proto, filing_from_proto
from broker.grpc.interceptor import CALLER
from qtestbed.v1 import grants_pb2 as pb
from qtestbed.v1 import grants_pb2_grpc


class AccessRequestServicer(grants_pb2_grpc.AccessRequestServiceServicer):
    def __init__(self, requests: AccessRequests) -> None:
        self._requests = requests

    async def RequestAccess(self, request: pb.RequestAccessRequest, context: Any) -> Any:
        filed = await self._requests.file(CALLER.get(), filing_from_proto(request))
        return access_request_to_proto(filed)

    async def ApproveAccess(self, request: pb.DecideAccessRequest, context: Any) -> Any:
        approved = await self._requests.approve(CALLER.get(), request.request_id, request.reason)
        return access_request_to_proto(approved)

    async def DenyAccess(self, request: pb.DecideAccessRequest, context: Any) -> Any:
        denied = await self._requests.deny(CALLER.get(), request.request_id, request.reason)
        return access_request_to_proto(denied)

    async def ListAccessRequests(self, request: pb.ListAccessRequestsRequest, context: Any) -> Any:
        found = self._requests.list(CALLER.get(), request.principal, request.include_closed)
        return pb.ListAccessRequestsResponse(requests=[access_request_to_proto(r) for r in found])

    async def RevokeGrant(self, request: pb.DecideAccessRequest, context: Any) -> Any:
        revoked = await self._requests.revoke(CALLER.get(), request.request_id, request.reason)
        return access_request_to_proto(revoked)
