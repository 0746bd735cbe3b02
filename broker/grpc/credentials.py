"""CredentialService over gRPC: transport only (see `broker.grpc.codec.credentials`)."""

from __future__ import annotations

from typing import Any

from broker.access.credentials import CredentialBook
from broker.grpc.codec.credentials import credential_to_proto
from broker.grpc.interceptor import CALLER
from qtestbed.v1 import credentials_pb2 as pb
from qtestbed.v1 import credentials_pb2_grpc


class CredentialServicer(credentials_pb2_grpc.CredentialServiceServicer):
    def __init__(self, credentials: CredentialBook) -> None:
        self._credentials = credentials

    async def RecordCredential(self, request: pb.RecordCredentialRequest, context: Any) -> Any:
        recorded = await self._credentials.record(CALLER.get(), request.certificate_pem)
        return credential_to_proto(recorded)

    async def ListCredentials(self, request: pb.ListCredentialsRequest, context: Any) -> Any:
        found = self._credentials.list(request.principal)
        return pb.ListCredentialsResponse(credentials=[credential_to_proto(c) for c in found])

    async def RevokeCredential(self, request: pb.RevokeCredentialRequest, context: Any) -> Any:
        revoked = await self._credentials.revoke(CALLER.get(), request.serial, request.reason)
        return credential_to_proto(revoked)
