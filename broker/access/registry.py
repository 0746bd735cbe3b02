"""Principals and projects: who may use the facility, read from the access snapshot and
changed by operators through compare-and-set writes (`broker.access.records`).

The facility file only seeds them: after the first start the store is the source of truth.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from broker.access.documents import principal_to_doc, project_to_doc
from broker.access.facility import Facility
from broker.access.model import AccessError, AccessRecord, Principal, Project, RecordKind
from broker.access.records import AccessRecords, conflict
from broker.access.refusals import AccessRefusals
from broker.access.separation import elevation_refusal, self_edit
from broker.errors import BrokerError, ErrorCode, invalid, not_found

SEED_ACTOR = "facility-file"

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True, slots=True)
class Recorded(Generic[T]):
    """A record's value with its stored version and who changed it last (None: not stored)."""

    value: T
    meta: AccessRecord | None


class AccessRegistry:
    def __init__(
        self,
        records: AccessRecords,
        *,
        facility: Callable[[], Facility],
        refusals: AccessRefusals,
    ) -> None:
        self.records = records
        self._facility = facility
        self._refusals = refusals

    # --- reads (in memory) -------------------------------------------------------------------

    def principal(self, name: str) -> Principal | None:
        return self.records.snapshot.principals.get(name)

    def project(self, name: str) -> Project | None:
        return self.records.snapshot.projects.get(name)

    def principals(self) -> list[Recorded[Principal]]:
        return [self.principal_record(name) for name in sorted(self.records.snapshot.principals)]

    def projects(self) -> list[Recorded[Project]]:
        return [self.project_record(name) for name in sorted(self.records.snapshot.projects)]

    def principal_record(self, name: str) -> Recorded[Principal]:
        principal = self.principal(name)
        if principal is None:
            raise not_found("principal", name)
        return Recorded(value=principal, meta=self.records.record(RecordKind.PRINCIPAL, name))

    def project_record(self, name: str) -> Recorded[Project]:
        project = self.project(name)
        if project is None:
            raise not_found("project", name)
        return Recorded(value=project, meta=self.records.record(RecordKind.PROJECT, name))

    # --- seeding -------------------------------------------------------------------------------

    async def seed(self, facility: Facility) -> int:
        """Insert the facility file's principals and projects that the store does not have yet
        (and projects they name); returns how many were added. Existing records are left alone:
        after the first start the store, not the file, is the source of truth."""
        wanted = {p.name: p for p in facility.projects}
        for principal in facility.principals.values():
            for name in principal.projects:
                wanted.setdefault(name, Project(name=name))
        added = 0
        for project in wanted.values():
            if self.records.record(RecordKind.PROJECT, project.name) is None:
                added += await self.records.insert(
                    SEED_ACTOR, RecordKind.PROJECT, project.name, project_to_doc(project)
                )
        for principal in facility.principals.values():
            if self.records.record(RecordKind.PRINCIPAL, principal.name) is None:
                added += await self.records.insert(
                    SEED_ACTOR, RecordKind.PRINCIPAL, principal.name, principal_to_doc(principal)
                )
        if added:
            await self.records.load()
        return added

    # --- writes (operator role, checked at the edge) -----------------------------------------

    async def put_principal(
        self, caller: str, principal: Principal, expected_version: int
    ) -> Recorded[Principal]:
        facility = self._facility()
        try:
            principal.check_tier(facility.tiers)
        except AccessError as exc:
            raise invalid(str(exc)) from exc
        unknown = [p for p in principal.projects if self.project(p) is None]
        if unknown:
            raise invalid(
                f"project(s) {', '.join(unknown)} do not exist; create them first with "
                "'qtestbed project set'"
            )
        await self._separated(caller, principal, expected_version, facility)
        doc = principal_to_doc(principal)
        await self.records.put(caller, RecordKind.PRINCIPAL, principal.name, doc, expected_version)
        return self.principal_record(principal.name)

    async def delete_principal(self, caller: str, name: str, expected_version: int) -> None:
        record = self.records.record(RecordKind.PRINCIPAL, name)
        if record is None:
            raise not_found("principal", name)
        refusal = self_edit(caller, name, "remove")
        if refusal is not None:
            raise await self._refusals.refuse("principal", caller, name, refusal)
        still_open = self._open_requests(name)
        if still_open:
            # Grants are kept by principal name: left open, they would elevate whoever is
            # created under this name next.
            raise BrokerError(
                ErrorCode.FAILED_PRECONDITION,
                f"principal {name!r} still has open access requests or grants "
                f"({', '.join(still_open)}): deny or revoke them first "
                "('qtestbed access deny|revoke ID'), so nobody created later under this name "
                "inherits them",
            )
        version = expected_version or record.version
        await self.records.delete(caller, RecordKind.PRINCIPAL, name, version)

    def _open_requests(self, name: str) -> list[str]:
        requests = self.records.snapshot.requests.values()
        return sorted(r.request_id for r in requests if r.principal == name and r.open)

    async def _separated(
        self, caller: str, after: Principal, expected_version: int, facility: Facility
    ) -> None:
        """Refuse a self-edit or an elevation, judged against the very version replaced."""
        refusal = self_edit(caller, after.name, "change")
        if refusal is None:
            record = self.records.record(RecordKind.PRINCIPAL, after.name)
            if expected_version == 0 and record is not None:
                return  # a create of a name that exists: the write refuses it (ABORTED)
            if expected_version and (record is None or record.version != expected_version):
                raise conflict(RecordKind.PRINCIPAL, after.name)
            before = self.principal(after.name) if expected_version else None
            refusal = elevation_refusal(before, after, facility)
        if refusal is not None:
            raise await self._refusals.refuse("principal", caller, after.name, refusal)

    async def put_project(
        self, caller: str, project: Project, expected_version: int
    ) -> Recorded[Project]:
        doc = project_to_doc(project)
        await self.records.put(caller, RecordKind.PROJECT, project.name, doc, expected_version)
        return self.project_record(project.name)
