"""Roles are enforced on every RPC, from one table: each method of each served service has an
entry, and a live broker refuses every call whose caller holds none of the listed roles."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message_factory import GetMessageClass

from broker.access.model import Role
from broker.access.roles import RPC_ROLES
from qtestbed.client import Client
from qtestbed.testing import LocalFacility
from qtestbed.v1 import access_pb2, admin_pb2, credentials_pb2, devices_pb2, grants_pb2, jobs_pb2

SERVED = [
    service
    for module in (jobs_pb2, devices_pb2, admin_pb2, access_pb2, credentials_pb2, grants_pb2)
    for service in module.DESCRIPTOR.services_by_name.values()
]
# The facility `qtestbed init` writes: one principal per role combination worth testing.
HOLDERS = {
    "alice": frozenset({Role.RESEARCHER}),
    "sam": frozenset({Role.SECURITY}),
    "olivia": frozenset({Role.OPERATOR, Role.RESEARCHER}),
    "petra": frozenset({Role.APPROVER}),
}


def _methods() -> Iterator[MethodDescriptor]:
    for service in SERVED:
        yield from service.methods


def _path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def test_every_served_method_has_a_role_entry() -> None:
    served = {_path(m) for m in _methods()}
    assert served - set(RPC_ROLES) == set(), "methods with no role decision"
    assert set(RPC_ROLES) - served == set(), "role entries for methods that do not exist"


def test_only_operators_change_state_and_only_security_reads_the_audit_stream() -> None:
    # The audit service is the security team's alone, its one write included: witnesses run
    # as security principals and hand back cosignatures (AddCosignature), checked just below.
    writes = [
        p
        for p in RPC_ROLES
        if p.split("/")[-1].startswith(("Put", "Set", "Add", "Remove"))
        and "/qtestbed.v1.AuditService/" not in p
    ]
    writes += [p for p in RPC_ROLES if p.endswith(("/RegisterDevice", "/ReleaseDevice"))]
    writes += [p for p in RPC_ROLES if p.endswith("/DeletePrincipal")]
    assert writes
    assert all(RPC_ROLES[p] == {Role.OPERATOR} for p in writes)
    audit = [p for p in RPC_ROLES if "/qtestbed.v1.AuditService/" in p]
    assert audit
    assert all(RPC_ROLES[p] == {Role.SECURITY} for p in audit)


def _call(client: Client, method: MethodDescriptor) -> grpc.StatusCode | None:
    request = GetMessageClass(method.input_type)()
    response_class = GetMessageClass(method.output_type)
    path = _path(method)
    try:
        if method.server_streaming:
            stream = client.channel.unary_stream(
                path,
                request_serializer=type(request).SerializeToString,
                response_deserializer=response_class.FromString,
            )
            for _ in stream(request, timeout=5):
                break
        else:
            unary = client.channel.unary_unary(
                path,
                request_serializer=type(request).SerializeToString,
                response_deserializer=response_class.FromString,
            )
            unary(request, timeout=5)
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        if code is grpc.StatusCode.PERMISSION_DENIED:
            metadata = dict(exc.trailing_metadata() or ())
            return code if metadata.get("qtestbed-rule-id") == "role.required" else None
        return None
    return None


@pytest.mark.parametrize("holder", sorted(HOLDERS))
def test_a_live_broker_refuses_every_call_outside_the_callers_roles(
    facility: LocalFacility, holder: str
) -> None:
    facility.start_broker()
    client = facility.client(holder)
    refused = {_path(m) for m in _methods() if _call(client, m) is not None}
    expected = {path for path, roles in RPC_ROLES.items() if roles.isdisjoint(HOLDERS[holder])}
    assert refused == expected
