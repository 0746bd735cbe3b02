"""Just-in-time access: filing, deciding, revoking and expiring access requests.

A request asks for one elevation of one principal (a higher tier, a role, a licence, one device
above their tier) for a time, with a reason. Another principal decides it (see
`broker.access.request_rules`); once granted it counts until its own expiry time, and the
broker's tick writes it as EXPIRED (`expire_due`), which reloads the snapshot and wakes every
device queue so that the dispatcher's re-check refuses what the grant allowed. Each request is
an access record (compare-and-set, its audit event in the same write), so every replica sees it.

Filing rules: a reason and a duration up to 90 days (one for break-glass); the elevation must
be above the subject's record; only approvers, operators and security file for someone else;
no duplicate of a pending request; at most `MAX_PENDING` pending per requester. A request left
undecided for `PENDING_SECONDS` (14 days) lapses: it can no longer be decided, stops counting
as pending, and the tick writes it EXPIRED. A device the
requester may not see gets the same answer whether it exists or not: the request is filed, and
only its decider learns that no such device is registered.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

from broker.access.clearance import ClearanceGate
from broker.access.documents import access_request_to_doc
from broker.access.facility import Facility
from broker.access.grants import Grants
from broker.access.model import (
    PENDING_SECONDS,
    AccessError,
    AccessRequest,
    Elevation,
    Principal,
    RecordKind,
    RequestState,
    Role,
)
from broker.access.records import AccessRecords
from broker.access.refusals import AccessRefusals
from broker.access.request_rules import decision_refusal, max_duration, revocation_refusal
from broker.clock import Clock
from broker.devices.registry import DeviceRegistry
from broker.errors import BrokerError, ErrorCode, invalid, not_found

RULE_FOR_OTHERS = "access.file-for-other"
RULE_DUPLICATE = "access.duplicate"
RULE_PENDING_LIMIT = "access.pending-limit"
RULE_NOT_ELEVATION = "access.not-elevation"
MAX_PENDING = 10
SYSTEM_ACTOR = "broker"

_STAFF = frozenset({Role.APPROVER, Role.OPERATOR, Role.SECURITY})


@dataclass(frozen=True, kw_only=True, slots=True)
class Filing:
    """What a caller asks for; `principal` "" means the caller."""

    principal: str
    kind: Elevation
    value: str
    duration_seconds: float
    reason: str
    break_glass: bool = False


class AccessRequests:
    def __init__(
        self,
        *,
        records: AccessRecords,
        grants: Grants,
        refusals: AccessRefusals,
        devices: DeviceRegistry,
        gate: ClearanceGate,
        clock: Clock,
        facility: Callable[[], Facility],
    ) -> None:
        self._records = records
        self._grants = grants
        self._refusals = refusals
        self._devices = devices
        self._gate = gate
        self._clock = clock
        self._facility = facility

    # --- reads ---------------------------------------------------------------------------------

    def list(
        self, caller: str, principal: str = "", include_closed: bool = False
    ) -> list[AccessRequest]:
        """What the caller may see: staff see every request, anyone else their own."""
        staff = not self._caller(caller).roles.isdisjoint(_STAFF)
        found = [
            r
            for r in self._records.snapshot.requests.values()
            if (staff or caller in (r.principal, r.requested_by))
            and (not principal or r.principal == principal)
            and (include_closed or r.open)
        ]
        return sorted(found, key=lambda r: (r.created_at, r.request_id))

    # --- filing --------------------------------------------------------------------------------

    async def file(self, caller: str, filing: Filing) -> AccessRequest:
        now = self._clock.now()
        requester = self._caller(caller)
        subject_name = filing.principal or caller
        if subject_name != caller and requester.roles.isdisjoint(_STAFF):
            raise self._tally(
                caller,
                RULE_FOR_OTHERS,
                "only approvers, operators and security file requests for someone else; "
                "ask for yourself (leave out --principal)",
            )
        subject = self._records.snapshot.principals.get(subject_name)
        if subject is None:
            raise not_found("principal", subject_name)
        request = self._request(caller, subject_name, filing, now)
        self._check_elevation(requester, subject, request, now)
        self._check_pending(caller, request, now)
        await self._write(caller, request, 0, "created")
        return request

    def _request(self, caller: str, subject: str, filing: Filing, now: float) -> AccessRequest:
        if not filing.reason.strip():
            raise invalid("say why the access is needed (--reason); the approver reads it")
        limit = max_duration(filing.break_glass)
        if not 0 < filing.duration_seconds <= limit:
            kind = "a break-glass grant" if filing.break_glass else "a grant"
            raise invalid(
                f"{kind} lasts more than 0 and at most {limit / 86_400:g} day(s) (--for); "
                "ask again when it runs out"
            )
        try:
            return AccessRequest(
                request_id=f"ar-{uuid.uuid4().hex[:16]}",
                principal=subject,
                requested_by=caller,
                kind=filing.kind,
                value=filing.value,
                duration_seconds=filing.duration_seconds,
                reason=filing.reason.strip(),
                created_at=now,
                break_glass=filing.break_glass,
            )
        except AccessError as exc:
            raise invalid(str(exc)) from exc

    def _check_elevation(
        self, requester: Principal, subject: Principal, request: AccessRequest, now: float
    ) -> None:
        """Refuse a request for what the subject's record already holds."""
        tiers, value = self._facility().tiers, request.value
        held = False
        if request.kind is Elevation.TIER:
            if value not in tiers:
                raise invalid(f"tier {value!r} is not one of {', '.join(tiers)}")
            held = subject.tier in tiers and tiers.index(value) <= tiers.index(subject.tier)
        elif request.kind is Elevation.ROLE:
            held = Role(value) in subject.roles
        elif request.kind is Elevation.LICENCE:
            held = value in subject.licences
        elif request.kind is Elevation.DEVICE:
            # Decided the same way for an absent device as for a hidden one (the gate does the
            # same work for both); only a device the requester sees can be "already allowed".
            device = self._devices.get(value)
            visible = self._gate.visible_by_id(requester.name, value, device, now)
            held = (
                device is not None
                and visible
                and device.tier in tiers
                and subject.tier in tiers
                and tiers.index(device.tier) <= tiers.index(subject.tier)
            )
        if held:
            raise self._tally(
                requester.name,
                RULE_NOT_ELEVATION,
                f"{subject.name!r} already holds {request.kind.value} {value!r} on their "
                "record; a request is for more than the record gives",
            )

    def _check_pending(self, caller: str, request: AccessRequest, now: float) -> None:
        pending = [r for r in self._records.snapshot.requests.values() if r.waiting(now)]
        for other in pending:
            if (other.principal, other.kind, other.value) == (
                request.principal,
                request.kind,
                request.value,
            ):
                raise self._tally(
                    caller,
                    RULE_DUPLICATE,
                    f"request {other.request_id} already asks for this and is pending; "
                    "wait for its decision",
                    code=ErrorCode.FAILED_PRECONDITION,
                )
        if sum(r.requested_by == caller for r in pending) >= MAX_PENDING:
            raise self._tally(
                caller,
                RULE_PENDING_LIMIT,
                f"you have {MAX_PENDING} requests pending; wait for decisions before filing more",
                code=ErrorCode.RESOURCE_EXHAUSTED,
            )

    # --- decisions -----------------------------------------------------------------------------

    async def approve(self, caller: str, request_id: str, reason: str) -> AccessRequest:
        request = await self._decidable(caller, request_id, "decision")
        if request.kind is Elevation.DEVICE and self._devices.get(request.value) is None:
            raise BrokerError(
                ErrorCode.FAILED_PRECONDITION,
                f"device {request.value!r} is not registered at this facility; deny request "
                f"{request_id} (qtestbed access deny {request_id} --reason ...)",
            )
        if request.principal not in self._records.snapshot.principals:
            raise BrokerError(
                ErrorCode.FAILED_PRECONDITION,
                f"principal {request.principal!r} is no longer registered; deny the request",
            )
        approved = request.approved(caller, self._clock.now(), reason.strip())
        verb = "granted" if approved.state is RequestState.GRANTED else "approved"
        await self._write(caller, approved, self._version(request_id), verb)
        return approved

    async def deny(self, caller: str, request_id: str, reason: str) -> AccessRequest:
        if not reason.strip():
            raise invalid("say why the request is denied (--reason); the requester reads it")
        request = await self._decidable(caller, request_id, "decision")
        denied = request.denied(caller, self._clock.now(), reason.strip())
        await self._write(caller, denied, self._version(request_id), "denied")
        return denied

    async def revoke(self, caller: str, request_id: str, reason: str) -> AccessRequest:
        if not reason.strip():
            raise invalid("say why the grant is revoked (--reason)")
        request = self._known(request_id)
        refusal = revocation_refusal(self._caller(caller), request)
        if refusal is not None:
            raise await self._refusals.refuse("revoke", caller, request.principal, refusal)
        if request.state is not RequestState.GRANTED:
            raise _not_open(request, "revoked")
        revoked = request.revoked(caller, self._clock.now(), reason.strip())
        await self._write(caller, revoked, self._version(request_id), "revoked")
        return revoked

    async def _decidable(self, caller: str, request_id: str, area: str) -> AccessRequest:
        request = self._known(request_id)
        refusal = decision_refusal(self._caller(caller), request)
        if refusal is not None:
            raise await self._refusals.refuse(
                area, caller, request.principal, refusal, request=request_id
            )
        if request.state is not RequestState.PENDING:
            raise _not_open(request, "decided")
        if not request.waiting(self._clock.now()):
            raise BrokerError(
                ErrorCode.FAILED_PRECONDITION,
                f"request {request_id} waited undecided past its {PENDING_SECONDS / 86_400:g} "
                "days and has lapsed; it cannot be decided now: the requester files a new one",
            )
        return request

    # --- expiry (the broker's tick) ------------------------------------------------------------

    async def expire_due(self) -> None:
        """Write every grant past its time, and every request left undecided past its time, as
        EXPIRED (audited). One another replica wrote first is skipped."""
        now = self._clock.now()
        snapshot = self._records.snapshot
        due = [
            grant
            for grants in snapshot.grants.values()
            for grant in grants
            if grant.state is RequestState.GRANTED
            and grant.expires_at is not None
            and grant.expires_at <= now
        ]
        due += [
            r
            for r in snapshot.requests.values()
            if r.state is RequestState.PENDING and not r.waiting(now)
        ]
        for request in due:
            version = self._version(request.request_id)
            try:
                await self._write(SYSTEM_ACTOR, request.expired(now), version, "expired")
            except BrokerError as exc:
                if exc.code is not ErrorCode.ABORTED:
                    raise
                continue  # another replica expired it first; the reload shows it

    # --- helpers -------------------------------------------------------------------------------

    def _caller(self, caller: str) -> Principal:
        principal = self._grants.principal(caller)
        if principal is None:
            raise BrokerError(
                ErrorCode.UNAUTHENTICATED, f"{caller!r} is not a registered principal"
            )
        return principal

    def _known(self, request_id: str) -> AccessRequest:
        found = self._records.snapshot.requests.get(request_id)
        if found is None:
            raise not_found("access request", request_id)
        return found

    def _version(self, request_id: str) -> int:
        return self._records.version(RecordKind.ACCESS_REQUEST, request_id)

    def _tally(
        self,
        caller: str,
        rule: str,
        message: str,
        code: ErrorCode = ErrorCode.PERMISSION_DENIED,
    ) -> BrokerError:
        return self._refusals.tally("request", caller, BrokerError(code, message, rule_id=rule))

    async def _write(self, caller: str, request: AccessRequest, version: int, verb: str) -> None:
        detail = {"request": request.request_id, **access_request_to_doc(request)}
        await self._records.put(
            caller,
            RecordKind.ACCESS_REQUEST,
            request.request_id,
            access_request_to_doc(request),
            version,
            event_kind=f"access.request.{verb}",
            detail=detail,
            subject=request.principal,
        )


def _not_open(request: AccessRequest, verb: str) -> BrokerError:
    return BrokerError(
        ErrorCode.FAILED_PRECONDITION,
        f"request {request.request_id} is {request.state.value}; it cannot be {verb} now",
    )
