"""Who is calling, from what was cryptographically authenticated: the client certificate the
TLS layer verified to the facility root, issued by the client-issuing CA with clientAuth, its
principal named in a URI subject alternative name, its serial not revoked, its principal
registered. Never the common name, never a field of the request. The checks do not depend on
the transport: the gRPC edge and the /metrics endpoint (`broker.scrape`) both use them.

Each refusal is counted by reason and audited in aggregate (`broker.access.front_door`); the
caller is told UNAUTHENTICATED with what to do, never which check a stranger failed beyond that.
"""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from attestation.clients import ClientCertificateError, VerifiedClient, verify_client_certificate
from broker.access.credentials import CredentialBook, principal_named
from broker.access.facility import Facility
from broker.access.front_door import FrontDoor
from broker.access.grants import Grants
from broker.access.model import Principal
from broker.access.open_streams import REVOKED, SharedCheck, StreamCheck, StreamEnding
from broker.access.roles import authorize
from broker.clock import Clock
from broker.errors import BrokerError, ErrorCode

# Verified certificates kept by their bytes (a connection presents the same one each call).
_CACHE_SIZE = 4096


@dataclass(frozen=True, kw_only=True, slots=True)
class Caller:
    """An authenticated caller: the principal, and the credential (serial) it called with."""

    principal: Principal
    serial: str


class EdgeIdentity:
    def __init__(
        self,
        *,
        client_ca: x509.Certificate,
        facility: Callable[[], Facility],
        grants: Grants,
        credentials: CredentialBook,
        front_door: FrontDoor,
        clock: Clock,
    ) -> None:
        self._client_ca = client_ca
        self._facility = facility
        self._grants = grants
        self._credentials = credentials
        self._front_door = front_door
        self._clock = clock
        self._verified: OrderedDict[bytes, VerifiedClient | ClientCertificateError] = OrderedDict()

    async def caller(self, auth_context: dict[str, list[bytes]]) -> Caller:
        """The authenticated caller, or BrokerError(UNAUTHENTICATED) after counting why."""
        return await self.presenting(auth_context.get("x509_pem_cert") or [])

    async def presenting(self, pems: Sequence[bytes]) -> Caller:
        """Who presents these certificates (the leaf the TLS layer verified to the facility
        root, as PEM): the same checks for every edge that speaks TLS (gRPC, /metrics)."""
        if len(pems) != 1:
            raise self._refuse("no_certificate", "", "a client certificate is required")
        verified = self._verify(bytes(pems[0]))
        name = principal_named(verified.uris, self._facility().facility_id)
        if name is None:
            raise self._refuse(
                "no_principal",
                verified.serial,
                "the certificate names no principal of this facility",
            )
        if await self._credentials.revoked(verified.serial):
            raise self._refuse(
                "revoked", name, "this credential was revoked; ask an operator for a new one"
            )
        principal = self._grants.principal(name)  # with the roles granted to it now
        if principal is None:
            raise self._refuse(
                "unknown_principal",
                name,
                f"{name!r} is not a registered principal of this facility",
            )
        return Caller(principal=principal, serial=verified.serial)

    def stream_check(self, caller: Caller, method: str) -> StreamCheck:
        """What a new call by this caller would be refused now, if anything: a revoked
        credential, a principal no longer registered, a role (or the grant that gave it) gone.
        Read from memory: run on every access change and tick for every open stream."""
        name = caller.principal.name

        def check() -> StreamEnding | None:
            if caller.serial in self._credentials.revoked_serials():
                return REVOKED
            principal = self._grants.principal(name)
            if principal is None:
                return StreamEnding(
                    "unknown_principal",
                    BrokerError(
                        ErrorCode.UNAUTHENTICATED,
                        f"{name!r} is no longer a registered principal of this facility; "
                        "the stream ends",
                    ),
                )
            try:
                authorize(method, principal)
            except BrokerError as exc:
                return StreamEnding("role_required", exc)
            return None

        # The same answer for every stream of this credential on this method: asked once a
        # recheck, however many such streams are open.
        return SharedCheck(key=("edge", caller.serial, name, method), run=check)

    def refused_role(self, caller: Caller) -> None:
        """Count a call refused by the roles table (the caller was authenticated)."""
        self._front_door.refused("role_required", caller.principal.name)

    def _verify(self, pem: bytes) -> VerifiedClient:
        now = self._clock.now()
        found = self._verified.get(pem)
        if found is None:
            found = self._check(pem, now)
            self._verified[pem] = found
            if len(self._verified) > _CACHE_SIZE:
                self._verified.popitem(last=False)
        else:
            self._verified.move_to_end(pem)
        if isinstance(found, ClientCertificateError):
            raise self._refuse(found.reason.value, "", str(found))
        if not found.not_before <= now <= found.not_after:  # it may have expired since
            expired = self._check(pem, now)
            if isinstance(expired, ClientCertificateError):
                raise self._refuse(expired.reason.value, found.serial, str(expired))
        return found

    def _check(self, pem: bytes, now: float) -> VerifiedClient | ClientCertificateError:
        when = dt.datetime.fromtimestamp(now, dt.UTC)
        try:
            return verify_client_certificate(pem, self._client_ca, now=when)
        except ClientCertificateError as exc:
            return exc

    def _refuse(self, reason: str, who: str, message: str) -> BrokerError:
        self._front_door.refused(reason, who)
        return BrokerError(ErrorCode.UNAUTHENTICATED, message)


def auth_context_of(context: Any) -> dict[str, list[bytes]]:
    """gRPC's auth context of a call (property name -> values)."""
    found: dict[str, list[bytes]] = context.auth_context()
    return found
