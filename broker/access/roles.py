"""Which roles may call which RPC: one table, enforced at the edge for every call.

A method missing from the table is refused (fail closed), and a test checks that every method
of every service the broker serves has an entry, so a new RPC cannot ship without a decision.
Finer rules stay in the services: a researcher reads only their own jobs, and device
visibility is the policy's ViewDevice decision.
"""

from __future__ import annotations

from collections.abc import Mapping

from broker.access.model import Principal, Role
from broker.errors import BrokerError, ErrorCode

RULE_ROLE_REQUIRED = "role.required"

_R, _O, _S, _A = Role.RESEARCHER, Role.OPERATOR, Role.SECURITY, Role.APPROVER
_ANYONE = frozenset({_R, _O, _S, _A})
_OPERATOR = frozenset({_O})
_OPERATOR_OR_SECURITY = frozenset({_O, _S})


def _service(name: str, methods: Mapping[str, frozenset[Role]]) -> dict[str, frozenset[Role]]:
    return {f"/qtestbed.v1.{name}/{method}": roles for method, roles in methods.items()}


RPC_ROLES: Mapping[str, frozenset[Role]] = {
    **_service(
        "JobService",
        {
            "SubmitJob": frozenset({_R}),
            "SubmitJobs": frozenset({_R}),
            "GetQuota": frozenset({_R}),
            "OpenSession": frozenset({_R}),
            # Operators see and close any session; researchers only their own.
            "GetSession": frozenset({_R, _O}),
            "CloseSession": frozenset({_R, _O}),
            "ListSessions": frozenset({_R, _O}),
            # Operators manage other people's jobs; researchers see only their own.
            "GetJob": frozenset({_R, _O}),
            "WatchJob": frozenset({_R, _O}),
            "CancelJob": frozenset({_R, _O}),
            "ListJobs": frozenset({_R, _O}),
            "GetResult": frozenset({_R, _O}),
            "GetResultProof": frozenset({_R, _O}),
        },
    ),
    # What each caller sees is the policy's ViewDevice decision, per device.
    **_service("DeviceService", {"ListDevices": _ANYONE, "GetDevice": _ANYONE}),
    **_service(
        "DeviceAdminService",
        {
            "RegisterDevice": _OPERATOR,
            "SetReferenceValues": _OPERATOR,
            "ReleaseDevice": _OPERATOR,
            # Security may pull a compromised device at once, without waiting for an operator.
            "RevokeDevice": _OPERATOR_OR_SECURITY,
            "ListRegisteredDevices": _OPERATOR_OR_SECURITY,
            "ListReferenceValues": _OPERATOR_OR_SECURITY,
            "GetAttestationHistory": _OPERATOR_OR_SECURITY,
            "ExplainAccess": _OPERATOR_OR_SECURITY,
        },
    ),
    **_service(
        "AccessAdminService",
        {
            "PutPrincipal": _OPERATOR,
            "DeletePrincipal": _OPERATOR,
            "PutProject": _OPERATOR,
            "SetDeviceState": _OPERATOR,
            "AddDeviceWindow": _OPERATOR,
            "RemoveDeviceWindow": _OPERATOR,
            "GetPrincipal": _OPERATOR_OR_SECURITY,
            "ListPrincipals": _OPERATOR_OR_SECURITY,
            "ListProjects": _OPERATOR_OR_SECURITY,
            "ListDeviceOperations": _OPERATOR_OR_SECURITY,
        },
    ),
    **_service(
        "AuditService",
        {
            "StreamAudit": frozenset({_S}),
            "ListCheckpoints": frozenset({_S}),
            # Witnesses run as security-role principals; a cosignature must also verify with a
            # witness key the operator registered ([witnesses] in broker.toml).
            "GetConsistencyProof": frozenset({_S}),
            "AddCosignature": frozenset({_S}),
        },
    ),
    **_service(
        "CredentialService",
        {
            "RecordCredential": _OPERATOR,
            "ListCredentials": _OPERATOR_OR_SECURITY,
            # Security may cut a stolen credential off at once.
            "RevokeCredential": _OPERATOR_OR_SECURITY,
        },
    ),
    **_service(
        "AccessRequestService",
        {
            # Anyone may ask; what each sees of the list is decided in the service.
            "RequestAccess": _ANYONE,
            "ListAccessRequests": _ANYONE,
            # Break-glass requests take two security principals; the service checks which.
            "ApproveAccess": frozenset({_A, _S}),
            "DenyAccess": frozenset({_A, _S}),
            "RevokeGrant": frozenset({_A, _O, _S}),
        },
    ),
}


def authorize(method: str, principal: Principal) -> None:
    """Raise PERMISSION_DENIED unless one of the principal's roles may call `method`."""
    allowed = RPC_ROLES.get(method)
    if allowed is None:
        raise BrokerError(
            ErrorCode.PERMISSION_DENIED,
            f"{method} has no role assignment at this broker; it is refused for everyone",
            rule_id=RULE_ROLE_REQUIRED,
        )
    if principal.roles.isdisjoint(allowed):
        wanted = " or ".join(sorted(r.value for r in allowed))
        held = ", ".join(sorted(r.value for r in principal.roles)) or "none"
        raise BrokerError(
            ErrorCode.PERMISSION_DENIED,
            f"this call needs the {wanted} role (you hold: {held}); ask a facility operator",
            rule_id=RULE_ROLE_REQUIRED,
        )
