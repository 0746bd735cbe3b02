"""CredentialService messages <-> domain objects: pure functions."""

from __future__ import annotations

from broker.access.model import Credential
from qtestbed.shared.wire import to_timestamp
from qtestbed.v1 import credentials_pb2 as pb


def credential_to_proto(c: Credential) -> pb.Credential:
    return pb.Credential(
        serial=c.serial,
        principal=c.principal,
        fingerprint=c.fingerprint,
        not_before=to_timestamp(c.not_before),
        not_after=to_timestamp(c.not_after),
        recorded_at=to_timestamp(c.recorded_at),
        recorded_by=c.recorded_by,
        revoked=c.revoked,
        revoked_at=to_timestamp(c.revoked_at),
        revoked_by=c.revoked_by,
        revocation_reason=c.revocation_reason,
    )
