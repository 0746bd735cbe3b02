"""Who may decide an access request, and how long a grant may last: pure rules, each refusal a
BrokerError with its rule id (counted and audited by the caller, `broker.access.requests`).

- Nobody decides a request they are the subject of or filed (`access.own-request`): an
  elevation always takes a second principal.
- A normal request is decided by an approver or a security principal (`access.decider-role`).
- A break-glass request is decided by security principals only, and granted on the approvals
  of two different ones (`access.break-glass`); it lasts at most a day.
- A grant is revoked by an approver, an operator or a security principal
  (`access.revoker-role`).
"""

from __future__ import annotations

from broker.access.model import DAY_SECONDS, AccessRequest, Principal, Role
from broker.errors import BrokerError, ErrorCode

RULE_OWN_REQUEST = "access.own-request"
RULE_DECIDER_ROLE = "access.decider-role"
RULE_BREAK_GLASS = "access.break-glass"
RULE_REVOKER_ROLE = "access.revoker-role"

MAX_GRANT_SECONDS = 90 * DAY_SECONDS
MAX_BREAK_GLASS_SECONDS = DAY_SECONDS

_DECIDERS = frozenset({Role.APPROVER, Role.SECURITY})
_REVOKERS = frozenset({Role.APPROVER, Role.OPERATOR, Role.SECURITY})


def _denied(rule: str, message: str) -> BrokerError:
    return BrokerError(ErrorCode.PERMISSION_DENIED, message, rule_id=rule)


def max_duration(break_glass: bool) -> float:
    return MAX_BREAK_GLASS_SECONDS if break_glass else MAX_GRANT_SECONDS


def decision_refusal(decider: Principal, request: AccessRequest) -> BrokerError | None:
    """Why `decider` may not approve or deny `request`, or None if they may."""
    name = decider.name
    if name in (request.principal, request.requested_by):
        whose = "for you" if name == request.principal else "you filed"
        return _denied(
            RULE_OWN_REQUEST,
            f"request {request.request_id} is {whose}; a different principal with the "
            "approver role must decide it",
        )
    if request.break_glass:
        if Role.SECURITY not in decider.roles:
            return _denied(
                RULE_BREAK_GLASS,
                f"request {request.request_id} is break-glass: only security principals "
                "decide it, two different ones to grant it",
            )
        if any(a.approver == name for a in request.approvals):
            return _denied(
                RULE_BREAK_GLASS,
                f"you already approved break-glass request {request.request_id}; a second, "
                "different security principal must approve it too",
            )
        return None
    if decider.roles.isdisjoint(_DECIDERS):
        return _denied(
            RULE_DECIDER_ROLE,
            f"request {request.request_id} is decided by a principal with the approver or "
            "security role",
        )
    return None


def revocation_refusal(revoker: Principal, request: AccessRequest) -> BrokerError | None:
    if revoker.roles.isdisjoint(_REVOKERS):
        return _denied(
            RULE_REVOKER_ROLE,
            f"grant {request.request_id} is revoked by an approver, operator or security principal",
        )
    return None
