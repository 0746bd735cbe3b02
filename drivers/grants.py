"""Lease grants as the driver receives them: sealed by the broker to this connection's grant key.

The driver makes a new X25519 grant key pair for every connection (every Hello), announces the
public half in the Hello and keeps the secret half in memory only, never on disk and never
reused after a reconnect. The broker seals each grant to it, and binds the box to the
connection's CurveZMQ link public key too. So a grant opens only for the connection it was
meant for: another host holding the same link key, even one that took over the connection's
routing id, holds no grant secret of that connection. A grant that does not open (sealed to
another key, altered, or not sealed at all) is not run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from attestation.sealing import Sealed, SealError, new_keypair, open_sealed, public_of
from qtestbed.shared.wire import lease_grant_seal_context
from qtestbed.v1 import driver_link_pb2 as link_pb


class GrantError(Exception):
    """A lease grant this driver cannot open."""


@dataclass(frozen=True, kw_only=True, slots=True)
class GrantKey:
    """The X25519 key pair one connection's lease grants are sealed to (raw 32 bytes each)."""

    secret: bytes = field(repr=False)
    public: bytes

    @classmethod
    def new(cls) -> GrantKey:
        """A fresh pair, for one connection only."""
        secret, public = new_keypair()
        return cls(secret=secret, public=public)

    @classmethod
    def from_secret(cls, secret: bytes) -> GrantKey:
        """The pair of a raw X25519 secret key (for a test trying a key it holds)."""
        return cls(secret=secret, public=public_of(secret))


def open_grant(grant: link_pb.LeaseGrant, key: GrantKey, *, link_key: bytes) -> link_pb.LeaseGrant:
    """The grant inside `grant`'s sealed box, opened with this connection's grant key; `link_key`
    is this driver's raw CurveZMQ link public key, which the box must have been bound to."""
    if not grant.HasField("sealed"):
        raise GrantError("the lease grant is not sealed; refusing to run it")
    box = Sealed(
        ephemeral_public=grant.sealed.ephemeral_public,
        nonce=grant.sealed.nonce,
        ciphertext=grant.sealed.ciphertext,
    )
    try:
        plain = open_sealed(key.secret, box, context=lease_grant_seal_context(link_key))
        inner = link_pb.LeaseGrant()
        inner.ParseFromString(plain)
    except (SealError, DecodeError, ValueError) as exc:
        detail = f"the lease grant does not open with this connection's grant key: {exc}"
        raise GrantError(detail) from exc
    return inner
