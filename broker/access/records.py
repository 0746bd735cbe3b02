"""Access records, live from the store: the snapshot every decision reads, and the one
compare-and-set write path every change takes.

Reads come from memory (the clearance gate asks on every submit, dispatch and device read, so
it must not cost a database round trip). The snapshot is replaced after each write made here
and, for writes made by other broker replicas, when the store's access fingerprint changes
(`refresh`, polled on the broker's tick). Each write is compare-and-set on the record's version
and carries its audit event into the same transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from broker.access.documents import (
    access_request_from_doc,
    credential_from_doc,
    operations_from_doc,
    principal_from_doc,
    project_from_doc,
)
from broker.access.model import (
    AccessError,
    AccessRecord,
    AccessRequest,
    Credential,
    Principal,
    Project,
    RecordKind,
    RequestState,
)
from broker.audit.log import AuditLog
from broker.clock import Clock
from broker.devices.model import DeviceOperations
from broker.errors import BrokerError, ErrorCode
from broker.metrics import BrokerMetrics
from broker.store.runner import StoreRunner

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True, slots=True)
class Snapshot:
    principals: Mapping[str, Principal]
    projects: Mapping[str, Project]
    operations: Mapping[str, DeviceOperations]
    credentials: Mapping[str, Credential]
    records: Mapping[tuple[RecordKind, str], AccessRecord]
    requests: Mapping[str, AccessRequest] = field(default_factory=dict)
    # Granted requests by the principal they elevate (in force or past their time: each
    # reader asks `AccessRequest.in_force(now)`, so none counts a second after it expires).
    grants: Mapping[str, tuple[AccessRequest, ...]] = field(default_factory=dict)


_EMPTY = Snapshot(principals={}, projects={}, operations={}, credentials={}, records={})


class AccessRecords:
    def __init__(
        self,
        *,
        runner: StoreRunner,
        clock: Clock,
        audit: AuditLog,
        metrics: BrokerMetrics,
        on_change: Sequence[Callable[[], object]] = (),
    ) -> None:
        self._runner = runner
        self._clock = clock
        self._audit = audit
        self._metrics = metrics
        # Told after every reload, so queues move at once when a device comes back online.
        self._on_change = tuple(on_change)
        self._fingerprint: tuple[int, int, float] | None = None
        self.snapshot = _EMPTY

    def record(self, kind: RecordKind, name: str) -> AccessRecord | None:
        return self.snapshot.records.get((kind, name))

    def version(self, kind: RecordKind, name: str) -> int:
        record = self.record(kind, name)
        return record.version if record is not None else 0

    # --- loading -----------------------------------------------------------------------------

    async def load(self) -> None:
        store = self._runner.store
        fingerprint = await self._runner.call(store.access_fingerprint)
        self._install(await self._runner.call(store.access_records))
        self._fingerprint = fingerprint

    async def refresh(self) -> bool:
        """Reload if another writer (a broker replica) changed any record; True if reloaded."""
        current = await self._runner.call(self._runner.store.access_fingerprint)
        if current == self._fingerprint:
            return False
        await self.load()
        return True

    def _install(self, records: Iterable[AccessRecord]) -> None:
        parsed: dict[RecordKind, dict[str, Any]] = {kind: {} for kind in RecordKind}
        by_key: dict[tuple[RecordKind, str], AccessRecord] = {}
        for record in records:
            try:
                parsed[record.kind][record.name] = _PARSERS[record.kind](record.name, record.doc)
            except AccessError as exc:
                # Fail closed for this record only: an unreadable principal has no access.
                # (An unreadable credential cannot be told apart from a revoked one; see
                # broker.access.credentials, which refuses it.)
                log.error("ignoring unreadable access record %s: %s", record.name, exc)
                continue
            by_key[(record.kind, record.name)] = record
        requests: dict[str, AccessRequest] = parsed[RecordKind.ACCESS_REQUEST]
        grants: dict[str, list[AccessRequest]] = {}
        for request in requests.values():
            if request.state is RequestState.GRANTED:
                grants.setdefault(request.principal, []).append(request)
        self.snapshot = Snapshot(
            principals=parsed[RecordKind.PRINCIPAL],
            projects=parsed[RecordKind.PROJECT],
            operations=parsed[RecordKind.DEVICE],
            credentials=parsed[RecordKind.CREDENTIAL],
            records=by_key,
            requests=requests,
            grants={name: tuple(found) for name, found in grants.items()},
        )
        for callback in self._on_change:
            callback()

    # --- writes --------------------------------------------------------------------------------

    async def insert(self, actor: str, kind: RecordKind, name: str, doc: dict[str, Any]) -> bool:
        """Create a record unless one exists; no reload (seeding inserts several, then loads)."""
        record = AccessRecord(
            kind=kind, name=name, doc=doc, version=1, updated_at=self._clock.now(), updated_by=actor
        )
        event = self._audit.event(f"access.{kind.value}.seeded", actor, name, {"record": doc})
        store = self._runner.store
        return await self._runner.call(store.put_access, record, expected_version=None, event=event)

    async def put(
        self,
        caller: str,
        kind: RecordKind,
        name: str,
        doc: dict[str, Any],
        expected_version: int,
        *,
        event_kind: str = "",
        detail: dict[str, Any] | None = None,
        subject: str = "",
    ) -> AccessRecord:
        """Write `doc` as the next version of the record read at `expected_version` (0: create;
        ABORTED if it exists by now, so two operators creating one name cannot overwrite)."""
        current = self.record(kind, name)
        if current is not None and expected_version == 0:
            raise BrokerError(
                ErrorCode.ABORTED,
                f"{kind.value} {name!r} already exists (version {current.version}); read it "
                "and pass its version to change it",
            )
        if (current.version if current is not None else 0) != expected_version:
            raise conflict(kind, name)
        record = AccessRecord(
            kind=kind,
            name=name,
            doc=doc,
            version=expected_version + 1,
            updated_at=self._clock.now(),
            updated_by=caller,
        )
        verb = "created" if current is None else "updated"
        event = self._audit.event(
            event_kind or f"access.{kind.value}.{verb}",
            caller,
            subject or name,
            detail if detail is not None else {"record": doc, "version": record.version},
        )
        store = self._runner.store
        previous = None if current is None else current.version
        if not await self._runner.call(
            store.put_access, record, expected_version=previous, event=event
        ):
            await self.load()
            raise conflict(kind, name)
        await self._changed(kind)
        return record

    async def delete(self, caller: str, kind: RecordKind, name: str, expected_version: int) -> None:
        """Remove the record if it is still at `expected_version`; ABORTED otherwise."""
        event = self._audit.event(
            f"access.{kind.value}.removed", caller, name, {"version": expected_version}
        )
        store = self._runner.store
        if not await self._runner.call(
            store.delete_access, kind, name, expected_version=expected_version, event=event
        ):
            raise conflict(kind, name)
        await self._changed(kind)

    async def _changed(self, kind: RecordKind) -> None:
        self._metrics.access_changes.labels(kind.value).inc()
        await self.load()


_PARSERS: Mapping[RecordKind, Callable[[str, Mapping[str, Any]], Any]] = {
    RecordKind.PRINCIPAL: principal_from_doc,
    RecordKind.PROJECT: project_from_doc,
    RecordKind.DEVICE: operations_from_doc,
    RecordKind.CREDENTIAL: credential_from_doc,
    RecordKind.ACCESS_REQUEST: access_request_from_doc,
}


def conflict(kind: RecordKind, name: str) -> BrokerError:
    return BrokerError(
        ErrorCode.ABORTED,
        f"{kind.value} {name!r} changed since you read it; read it again and retry",
    )
