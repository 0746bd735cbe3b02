"""The access registry: principals, projects and device operations, live from the store.

Reads come from an in-memory snapshot (the clearance gate asks on every submit, dispatch and
device read, so it must not cost a database round trip). The snapshot is replaced after each
write made here and, for writes made by other broker replicas, when the store's access
fingerprint changes (`refresh`, polled on the broker's tick). Writes are compare-and-set on the
record's version and audited in the same transaction.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from broker.access.documents import (
    operations_from_doc,
    operations_to_doc,
    principal_from_doc,
    principal_to_doc,
    project_from_doc,
    project_to_doc,
)
from broker.access.facility import Facility
from broker.access.model import (
    DAY_SECONDS,
    AccessError,
    AccessRecord,
    Principal,
    Project,
    Quota,
    QuotaCheck,
    RecordKind,
    Usage,
)
from broker.audit.model import AuditEvent
from broker.devices.model import (
    DeviceOperations,
    DeviceRecord,
    DeviceStatus,
    OperatingState,
    Window,
    WindowKind,
)
from broker.errors import BrokerError, ErrorCode, invalid, not_found
from broker.metrics import BrokerMetrics
from broker.policy.attributes import format_time
from broker.store.runner import StoreRunner

log = logging.getLogger(__name__)

SEED_ACTOR = "facility-file"
# Stops an operator's typo from booking a device for a century.
MAX_WINDOW_SECONDS = 366 * DAY_SECONDS


@dataclass(frozen=True, kw_only=True, slots=True)
class Snapshot:
    principals: Mapping[str, Principal]
    projects: Mapping[str, Project]
    operations: Mapping[str, DeviceOperations]
    records: Mapping[tuple[RecordKind, str], AccessRecord]


@dataclass(frozen=True, kw_only=True, slots=True)
class Availability:
    """Whether a device's queue may move now, and for which projects (None = any)."""

    runs_jobs: bool
    projects: tuple[str, ...] | None
    why: str


@dataclass(frozen=True, kw_only=True, slots=True)
class QuotaStatus:
    """A quota next to its usage, for the researcher to see before submitting."""

    scope: str  # "principal" | "project"
    name: str
    max_active_jobs: int
    max_shots_per_day: int
    usage: Usage


class AccessRegistry:
    def __init__(
        self,
        runner: StoreRunner,
        *,
        facility: Callable[[], Facility],
        device_exists: Callable[[str], bool],
        now: Callable[[], float],
        metrics: BrokerMetrics | None = None,
    ) -> None:
        self.runner = runner
        self.store = runner.store
        self._facility = facility
        self._device_exists = device_exists
        self.now = now
        self.metrics = metrics
        # Called after every reload, so queues move at once when a device comes back online.
        self.on_change: list[Callable[[], object]] = []
        self._fingerprint: tuple[int, int, float] | None = None
        self.snapshot = Snapshot(principals={}, projects={}, operations={}, records={})

    # --- reads (in memory) -------------------------------------------------------------------

    def principal(self, name: str) -> Principal | None:
        return self.snapshot.principals.get(name)

    def project(self, name: str) -> Project | None:
        return self.snapshot.projects.get(name)

    def operations(self, device_id: str) -> DeviceOperations:
        found = self.snapshot.operations.get(device_id)
        return found if found is not None else DeviceOperations(device_id=device_id)

    def version(self, kind: RecordKind, name: str) -> int:
        record = self.snapshot.records.get((kind, name))
        return record.version if record is not None else 0

    def record(self, kind: RecordKind, name: str) -> AccessRecord | None:
        return self.snapshot.records.get((kind, name))

    def scheduled_devices(self, now: float) -> list[str]:
        """Devices with a window that has not ended: their availability changes with time."""
        return [
            device_id
            for device_id, ops in self.snapshot.operations.items()
            if any(w.ends_at > now - 60 for w in ops.windows)
        ]

    def operating_state(self, device: DeviceRecord, now: float) -> OperatingState:
        """What the device is doing now: a revoked certificate retires it whatever its operator
        state; otherwise the operator's state, or maintenance inside a maintenance window."""
        if device.status is DeviceStatus.REVOKED:
            return OperatingState.RETIRED
        return self.operations(device.device_id).effective_state(now)

    def availability(self, device_id: str, now: float) -> Availability:
        ops = self.operations(device_id)
        state = ops.effective_state(now)
        if state in (OperatingState.MAINTENANCE, OperatingState.RETIRED):
            window = ops.maintenance_at(now)
            if window is not None:
                until = format_time(window.ends_at)
                why = f"device {device_id} is in a maintenance window until {until}"
            else:
                why = f"device {device_id} is {state.value}" + (
                    f" ({ops.reason})" if ops.reason else ""
                )
            if state is OperatingState.RETIRED:
                why += "; it will not run jobs again: cancel and submit to another device"
            return Availability(runs_jobs=False, projects=None, why=why)
        reservation = ops.reservation_at(now)
        if reservation is not None and reservation.covers(now):
            return Availability(
                runs_jobs=True,
                projects=(reservation.project,),
                why=f"device {device_id} is reserved for project {reservation.project} until "
                f"{format_time(reservation.ends_at)}",
            )
        return Availability(runs_jobs=True, projects=None, why="")

    def quota_check(self, owner: Principal, project: str, now: float) -> QuotaCheck | None:
        found = self.project(project)
        project_quota = found.quota if found is not None else Quota()
        if not owner.quota.limited and not project_quota.limited:
            return None
        return QuotaCheck(
            owner=owner.name,
            owner_quota=owner.quota,
            project=project,
            project_quota=project_quota,
            since=now - DAY_SECONDS,
        )

    async def quota_status(self, owner: Principal, project: str, now: float) -> list[QuotaStatus]:
        """The caller's and the project's quotas with current usage, read from the store."""
        since = now - DAY_SECONDS
        found = self.project(project)
        scopes: list[tuple[str, str, Any]] = [("principal", owner.name, owner.quota)]
        if found is not None:
            scopes.append(("project", project, found.quota))
        statuses = []
        for scope, name, quota in scopes:
            usage = await self.runner.call(
                self.store.job_usage,
                owner=name if scope == "principal" else None,
                project=name if scope == "project" else None,
                since=since,
            )
            statuses.append(
                QuotaStatus(
                    scope=scope,
                    name=name,
                    max_active_jobs=quota.max_active_jobs,
                    max_shots_per_day=quota.max_shots_per_day,
                    usage=usage,
                )
            )
        return statuses

    # --- loading -----------------------------------------------------------------------------

    async def load(self) -> None:
        fingerprint = await self.runner.call(self.store.access_fingerprint)
        records = await self.runner.call(self.store.access_records)
        self._install(records)
        self._fingerprint = fingerprint

    async def refresh(self) -> bool:
        """Reload if another writer (a broker replica) changed any record; True if reloaded."""
        if await self.runner.call(self.store.access_fingerprint) == self._fingerprint:
            return False
        await self.load()
        return True

    def _install(self, records: Iterable[AccessRecord]) -> None:
        principals: dict[str, Principal] = {}
        projects: dict[str, Project] = {}
        operations: dict[str, DeviceOperations] = {}
        by_key: dict[tuple[RecordKind, str], AccessRecord] = {}
        for record in records:
            try:
                if record.kind is RecordKind.PRINCIPAL:
                    principals[record.name] = principal_from_doc(record.name, record.doc)
                elif record.kind is RecordKind.PROJECT:
                    projects[record.name] = project_from_doc(record.name, record.doc)
                else:
                    operations[record.name] = operations_from_doc(record.name, record.doc)
            except AccessError as exc:
                # Fail closed for this record only: an unreadable principal has no access.
                log.error("ignoring unreadable access record %s: %s", record.name, exc)
                continue
            by_key[(record.kind, record.name)] = record
        self.snapshot = Snapshot(
            principals=principals, projects=projects, operations=operations, records=by_key
        )
        for callback in self.on_change:
            callback()

    async def seed(self, facility: Facility) -> int:
        """Insert the facility file's principals and projects that the store does not have yet
        (and projects they name); returns how many were added. Existing records are left alone:
        after the first start the store, not the file, is the source of truth."""
        added = 0
        wanted_projects = {p.name: p for p in facility.projects}
        for principal in facility.principals.values():
            for name in principal.projects:
                wanted_projects.setdefault(name, Project(name=name))
        for project in wanted_projects.values():
            if self.record(RecordKind.PROJECT, project.name) is None:
                added += await self._insert(
                    RecordKind.PROJECT, project.name, project_to_doc(project)
                )
        for principal in facility.principals.values():
            if self.record(RecordKind.PRINCIPAL, principal.name) is None:
                added += await self._insert(
                    RecordKind.PRINCIPAL, principal.name, principal_to_doc(principal)
                )
        if added:
            await self.load()
        return added

    async def _insert(self, kind: RecordKind, name: str, doc: dict[str, Any]) -> int:
        record = AccessRecord(
            kind=kind, name=name, doc=doc, version=1, updated_at=self.now(), updated_by=SEED_ACTOR
        )
        event = self._event(f"access.{kind.value}.seeded", SEED_ACTOR, name, {"record": doc})
        return int(
            await self.runner.call(
                self.store.put_access, record, expected_version=None, event=event
            )
        )

    # --- writes (operator role, checked at the edge) -----------------------------------------

    async def put_principal(
        self, caller: str, principal: Principal, expected_version: int
    ) -> AccessRecord:
        facility = self._facility()
        if not principal.name:
            raise invalid("a principal needs a name (the common name of its certificate)")
        if principal.tier not in facility.tiers:
            raise invalid(f"tier {principal.tier!r} is not one of {', '.join(facility.tiers)}")
        if not principal.roles:
            raise invalid("give the principal at least one role: researcher, operator, security")
        unknown = [p for p in principal.projects if p not in self.snapshot.projects]
        if unknown:
            raise invalid(
                f"project(s) {', '.join(unknown)} do not exist; create them first with "
                "'qtestbed project set'"
            )
        return await self._put(
            caller,
            RecordKind.PRINCIPAL,
            principal.name,
            principal_to_doc(principal),
            expected_version,
        )

    async def delete_principal(self, caller: str, name: str, expected_version: int) -> None:
        record = self.record(RecordKind.PRINCIPAL, name)
        if record is None:
            raise not_found("principal", name)
        if caller == name:
            raise BrokerError(
                ErrorCode.FAILED_PRECONDITION,
                "you cannot remove your own principal; ask another operator",
            )
        version = expected_version or record.version
        event = self._event("access.principal.removed", caller, name, {"version": version})
        deleted = await self.runner.call(
            self.store.delete_access,
            RecordKind.PRINCIPAL,
            name,
            expected_version=version,
            event=event,
        )
        if not deleted:
            raise _conflict(RecordKind.PRINCIPAL, name)
        self._changed(RecordKind.PRINCIPAL)
        await self.load()

    async def put_project(
        self, caller: str, project: Project, expected_version: int
    ) -> AccessRecord:
        if not project.name:
            raise invalid("a project needs a name")
        if project.weight < 1:
            raise invalid("a project's weight must be at least 1")
        return await self._put(
            caller, RecordKind.PROJECT, project.name, project_to_doc(project), expected_version
        )

    async def set_device_state(
        self, caller: str, device_id: str, state: OperatingState, reason: str
    ) -> DeviceOperations:
        return await self._update_operations(
            caller,
            device_id,
            lambda ops: dataclasses.replace(ops, state=state, reason=reason),
            "state",
            {"state": state.value, "reason": reason},
        )

    async def add_window(
        self,
        caller: str,
        device_id: str,
        *,
        kind: WindowKind,
        starts_at: float,
        ends_at: float,
        project: str = "",
        note: str = "",
    ) -> tuple[DeviceOperations, Window]:
        if ends_at <= starts_at:
            raise invalid("a window must end after it starts")
        if ends_at - starts_at > MAX_WINDOW_SECONDS:
            raise invalid("a window may last at most 366 days; add another one after it")
        if ends_at <= self.now():
            raise invalid("that window has already ended")
        if kind is WindowKind.RESERVATION and project not in self.snapshot.projects:
            raise invalid(f"project {project!r} does not exist; reservations are per project")
        if kind is WindowKind.MAINTENANCE and project:
            raise invalid("a maintenance window is for the whole device; drop the project")
        window = Window(
            window_id=uuid.uuid4().hex[:12],
            kind=kind,
            starts_at=starts_at,
            ends_at=ends_at,
            project=project,
            note=note,
            created_by=caller,
        )

        def add(ops: DeviceOperations) -> DeviceOperations:
            if kind is WindowKind.RESERVATION:
                for other in ops.windows:
                    if (
                        other.kind is WindowKind.RESERVATION
                        and other.starts_at < ends_at
                        and starts_at < other.ends_at
                    ):
                        raise BrokerError(
                            ErrorCode.FAILED_PRECONDITION,
                            f"device {device_id} is already reserved for project {other.project}"
                            f" from {format_time(other.starts_at)} until "
                            f"{format_time(other.ends_at)} (window {other.window_id}); "
                            "choose another time",
                        )
            return dataclasses.replace(ops, windows=(*ops.windows, window))

        detail = {
            "window": window.window_id,
            "kind": kind.value,
            "starts_at": starts_at,
            "ends_at": ends_at,
            "project": project,
        }
        ops = await self._update_operations(caller, device_id, add, f"{kind.value}.added", detail)
        return ops, window

    async def remove_window(self, caller: str, device_id: str, window_id: str) -> DeviceOperations:
        def remove(ops: DeviceOperations) -> DeviceOperations:
            kept = tuple(w for w in ops.windows if w.window_id != window_id)
            if len(kept) == len(ops.windows):
                raise not_found("window", window_id)
            return dataclasses.replace(ops, windows=kept)

        return await self._update_operations(
            caller, device_id, remove, "window.removed", {"window": window_id}
        )

    async def _update_operations(
        self,
        caller: str,
        device_id: str,
        change: Callable[[DeviceOperations], DeviceOperations],
        what: str,
        detail: dict[str, Any],
    ) -> DeviceOperations:
        if not self._device_exists(device_id):
            raise not_found("device", device_id)
        for _ in range(5):  # retry when another operator changed the device meanwhile
            current = self.operations(device_id)
            changed = change(current).pruned(self.now())
            version = self.version(RecordKind.DEVICE, device_id)
            try:
                await self._put(
                    caller,
                    RecordKind.DEVICE,
                    device_id,
                    operations_to_doc(changed),
                    version,
                    event_kind=f"access.device.{what}",
                    detail=detail,
                )
            except BrokerError as exc:
                if exc.code is not ErrorCode.ABORTED:
                    raise
                await self.load()
                continue
            return self.operations(device_id)
        raise BrokerError(ErrorCode.UNAVAILABLE, f"device {device_id} kept changing; try again")

    async def _put(
        self,
        caller: str,
        kind: RecordKind,
        name: str,
        doc: dict[str, Any],
        expected_version: int,
        *,
        event_kind: str = "",
        detail: dict[str, Any] | None = None,
    ) -> AccessRecord:
        """Write `doc` as the next version of the record read at `expected_version` (0: create;
        ABORTED if it exists by now, so two operators creating one name cannot overwrite)."""
        current = self.record(kind, name)
        created = current is None
        record = AccessRecord(
            kind=kind,
            name=name,
            doc=doc,
            version=(current.version if current is not None else 0) + 1,
            updated_at=self.now(),
            updated_by=caller,
        )
        if current is not None and expected_version == 0:
            raise BrokerError(
                ErrorCode.ABORTED,
                f"{kind.value} {name!r} already exists (version {current.version}); read it "
                "and pass its version to change it",
            )
        if (current.version if current is not None else 0) != expected_version:
            raise _conflict(kind, name)
        event = self._event(
            event_kind or f"access.{kind.value}.{'created' if created else 'updated'}",
            caller,
            name,
            detail if detail is not None else {"record": doc, "version": record.version},
        )
        stored = await self.runner.call(
            self.store.put_access,
            record,
            expected_version=None if current is None else current.version,
            event=event,
        )
        if not stored:
            await self.load()
            raise _conflict(kind, name)
        self._changed(kind)
        await self.load()
        return record

    def _changed(self, kind: RecordKind) -> None:
        if self.metrics is not None:
            self.metrics.access_changes.labels(kind.value).inc()

    def _event(self, kind: str, actor: str, subject: str, detail: Mapping[str, Any]) -> AuditEvent:
        return AuditEvent(
            kind=kind, actor=actor, subject=subject, at=self.now(), detail=dict(detail)
        )


def _conflict(kind: RecordKind, name: str) -> BrokerError:
    return BrokerError(
        ErrorCode.ABORTED,
        f"{kind.value} {name!r} changed since you read it; read it again and retry",
    )
