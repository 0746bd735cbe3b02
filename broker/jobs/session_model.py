"""A session: one researcher's hold on one device, so an iterative algorithm's jobs run back to
back. Plain data; stored by the store, managed by `broker.sessions`."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class SessionState(enum.Enum):
    OPEN = "OPEN"
    CLOSED = "CLOSED"


@dataclass(frozen=True, kw_only=True, slots=True)
class Session:
    session_id: str
    owner: str
    device_id: str
    project: str
    state: SessionState
    opened_at: float
    last_activity_at: float
    closes_at: float  # the facility's maximum length, whatever happens
    idle_timeout_seconds: float
    closed_reason: str = ""
    closed_at: float | None = None
    jobs: int = 0
    version: int = 1

    @property
    def open(self) -> bool:
        return self.state is SessionState.OPEN
