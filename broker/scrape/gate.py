"""Who may read /metrics: a client whose certificate passes the gRPC edge's identity checks
(client-issuing CA, clientAuth, a URI naming a principal of this facility, not revoked, the
principal registered), and whose principal holds the scraper role in the live access registry.
Metrics name every device, hidden ones too, so nobody else reads them.

Every refusal is counted by reason and audited in aggregate through the front door, as at the
gRPC edge; refusals the endpoint itself decides (a failed handshake, no free connection slot, a
deadline) are counted here too.
"""

from __future__ import annotations

from collections.abc import Sequence

from broker.access.front_door import FrontDoor
from broker.access.model import Role
from broker.errors import BrokerError, ErrorCode
from broker.grpc.identity import Caller, EdgeIdentity


class ScrapeGate:
    def __init__(self, *, identity: EdgeIdentity, front_door: FrontDoor) -> None:
        self._identity = identity
        self._front_door = front_door

    async def admit(self, pems: Sequence[bytes]) -> Caller:
        """The scraper presenting `pems` (the verified leaf), or BrokerError after counting why:
        UNAUTHENTICATED from the identity checks, PERMISSION_DENIED without the scraper role."""
        caller = await self._identity.presenting(pems)
        if Role.SCRAPER not in caller.principal.roles:
            self._identity.refused_role(caller)
            raise BrokerError(
                ErrorCode.PERMISSION_DENIED,
                "only a principal with the scraper role reads /metrics "
                "(qtestbed principal set NAME --role scraper)",
            )
        return caller

    def refused(self, reason: str) -> None:
        """Count a connection refused before anyone was identified (on the event loop)."""
        self._front_door.refused(reason, "")
