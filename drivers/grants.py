"""Lease grants as the driver receives them: sealed to its own link key by the broker.

Only the holder of the link secret key the grant was sealed to can read the circuit; a grant
that does not open (sealed to another key, altered, or not sealed at all) is not run.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError
from zmq.utils import z85

from attestation.sealing import Sealed, SealError, open_sealed
from qtestbed.shared.wire import LEASE_GRANT_SEAL_CONTEXT
from qtestbed.v1 import driver_link_pb2 as link_pb


class GrantError(Exception):
    """A lease grant this driver cannot open."""


def open_grant(grant: link_pb.LeaseGrant, link_secret_z85: bytes) -> link_pb.LeaseGrant:
    """The grant inside `grant`'s sealed box, opened with this driver's link secret key."""
    if not grant.HasField("sealed"):
        raise GrantError("the lease grant is not sealed; refusing to run it")
    box = Sealed(
        ephemeral_public=grant.sealed.ephemeral_public,
        nonce=grant.sealed.nonce,
        ciphertext=grant.sealed.ciphertext,
    )
    try:
        plain = open_sealed(z85.decode(link_secret_z85), box, context=LEASE_GRANT_SEAL_CONTEXT)
        inner = link_pb.LeaseGrant()
        inner.ParseFromString(plain)
    except (SealError, DecodeError, ValueError) as exc:
        detail = f"the lease grant does not open with this driver's link key: {exc}"
        raise GrantError(detail) from exc
    return inner
