"""Device operations: the operator's state for each device (online, draining, maintenance,
retired), its maintenance windows and project reservations, and whether its queue may move.

Stored as access records (kind `device`), so they share the access snapshot, its refresh from
other replicas and its compare-and-set writes.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from broker.access.documents import operations_to_doc
from broker.access.model import DAY_SECONDS, AccessRecord, RecordKind
from broker.access.records import AccessRecords
from broker.clock import Clock
from broker.devices.model import (
    DeviceOperations,
    DeviceRecord,
    DeviceState,
    OperatingState,
    Window,
    WindowKind,
)
from broker.errors import BrokerError, ErrorCode, invalid, not_found
from broker.policy.attributes import format_time

# Stops an operator's typo from booking a device for a century.
MAX_WINDOW_SECONDS = 366 * DAY_SECONDS


@dataclass(frozen=True, kw_only=True, slots=True)
class Availability:
    """Whether a device's queue may move now, and for which projects (None = any)."""

    runs_jobs: bool
    projects: tuple[str, ...] | None
    why: str


@dataclass(frozen=True, kw_only=True, slots=True)
class WindowRequest:
    """An operator's new maintenance window or reservation."""

    kind: WindowKind
    starts_at: float
    ends_at: float
    project: str = ""
    note: str = ""


class DeviceSchedule:
    def __init__(
        self, records: AccessRecords, *, clock: Clock, device_exists: Callable[[str], bool]
    ) -> None:
        self._records = records
        self._clock = clock
        self._device_exists = device_exists

    # --- reads (in memory) -------------------------------------------------------------------

    def operations(self, device_id: str) -> DeviceOperations:
        found = self._records.snapshot.operations.get(device_id)
        return found if found is not None else DeviceOperations(device_id=device_id)

    def state(self, record: DeviceRecord) -> DeviceState:
        return DeviceState(record=record, operations=self.operations(record.device_id))

    def record(self, device_id: str) -> AccessRecord | None:
        """The stored record behind a device's operations (its version), if any."""
        return self._records.record(RecordKind.DEVICE, device_id)

    def scheduled_devices(self, now: float) -> list[str]:
        """Devices with a window that has not ended: their availability changes with time."""
        return [
            device_id
            for device_id, ops in self._records.snapshot.operations.items()
            if any(w.ends_at > now - 60 for w in ops.windows)
        ]

    def availability(self, device_id: str, now: float) -> Availability:
        ops = self.operations(device_id)
        state = ops.effective_state(now)
        if state in (OperatingState.MAINTENANCE, OperatingState.RETIRED):
            return Availability(runs_jobs=False, projects=None, why=_held(ops, state, now))
        reservation = ops.reservation_at(now)
        if reservation is not None and reservation.covers(now):
            return Availability(
                runs_jobs=True,
                projects=(reservation.project,),
                why=f"device {device_id} is reserved for project {reservation.project} until "
                f"{format_time(reservation.ends_at)}",
            )
        return Availability(runs_jobs=True, projects=None, why="")

    # --- writes (operator role, checked at the edge) -----------------------------------------

    async def set_state(
        self, caller: str, device_id: str, state: OperatingState, reason: str
    ) -> DeviceOperations:
        return await self._update(
            caller,
            device_id,
            lambda ops: dataclasses.replace(ops, state=state, reason=reason),
            "state",
            {"state": state.value, "reason": reason},
        )

    async def add_window(
        self, caller: str, device_id: str, request: WindowRequest
    ) -> tuple[DeviceOperations, Window]:
        """Add a maintenance window or a reservation (of a project that exists)."""
        _check_window(request, self._clock.now(), self._records.snapshot.projects.keys())
        window = Window(
            window_id=uuid.uuid4().hex[:12],
            kind=request.kind,
            starts_at=request.starts_at,
            ends_at=request.ends_at,
            project=request.project,
            note=request.note,
            created_by=caller,
        )
        detail = {
            "window": window.window_id,
            "kind": request.kind.value,
            "starts_at": request.starts_at,
            "ends_at": request.ends_at,
            "project": request.project,
        }
        ops = await self._update(
            caller,
            device_id,
            lambda ops: _with_window(ops, window),
            f"{request.kind.value}.added",
            detail,
        )
        return ops, window

    async def remove_window(self, caller: str, device_id: str, window_id: str) -> DeviceOperations:
        def remove(ops: DeviceOperations) -> DeviceOperations:
            kept = tuple(w for w in ops.windows if w.window_id != window_id)
            if len(kept) == len(ops.windows):
                raise not_found("window", window_id)
            return dataclasses.replace(ops, windows=kept)

        return await self._update(
            caller, device_id, remove, "window.removed", {"window": window_id}
        )

    async def _update(
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
            # Ended windows go first: they decide nothing, so they must not refuse a change.
            now = self._clock.now()
            changed = change(self.operations(device_id).pruned(now)).pruned(now)
            version = self._records.version(RecordKind.DEVICE, device_id)
            try:
                await self._records.put(
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
                await self._records.load()
                continue
            return self.operations(device_id)
        raise BrokerError(ErrorCode.UNAVAILABLE, f"device {device_id} kept changing; try again")


def _held(ops: DeviceOperations, state: OperatingState, now: float) -> str:
    """Why a device in maintenance or retired runs nothing, in words a researcher can act on."""
    window = ops.maintenance_at(now)
    if window is not None:
        why = (
            f"device {ops.device_id} is in a maintenance window until {format_time(window.ends_at)}"
        )
    else:
        why = f"device {ops.device_id} is {state.value}" + (
            f" ({ops.reason})" if ops.reason else ""
        )
    if state is OperatingState.RETIRED:
        why += "; it will not run jobs again: cancel and submit to another device"
    return why


def _check_window(request: WindowRequest, now: float, projects: Collection[str]) -> None:
    if request.ends_at <= request.starts_at:
        raise invalid("a window must end after it starts")
    if request.ends_at - request.starts_at > MAX_WINDOW_SECONDS:
        raise invalid("a window may last at most 366 days; add another one after it")
    if request.ends_at <= now:
        raise invalid("that window has already ended")
    if request.kind is WindowKind.RESERVATION and request.project not in projects:
        raise invalid(f"project {request.project!r} does not exist; reservations are per project")
    if request.kind is WindowKind.MAINTENANCE and request.project:
        raise invalid("a maintenance window is for the whole device; drop the project")


def _with_window(ops: DeviceOperations, window: Window) -> DeviceOperations:
    """`ops` with `window` added; FAILED_PRECONDITION if it overlaps another reservation."""
    if window.kind is WindowKind.RESERVATION:
        for other in ops.windows:
            if (
                other.kind is WindowKind.RESERVATION
                and other.starts_at < window.ends_at
                and window.starts_at < other.ends_at
            ):
                raise BrokerError(
                    ErrorCode.FAILED_PRECONDITION,
                    f"device {ops.device_id} is already reserved for project {other.project}"
                    f" from {format_time(other.starts_at)} until "
                    f"{format_time(other.ends_at)} (window {other.window_id}); "
                    "choose another time",
                )
    return dataclasses.replace(ops, windows=(*ops.windows, window))
