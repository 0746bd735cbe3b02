"""What a store tells the other broker replicas sharing it: the topics of committed changes.

A PostgreSQL store sends one notification per topic and transaction (`NOTIFY`, delivered at
commit, so a replica that hears it reads committed state); `broker.store.pg_events` listens.
The payload names only what to re-read, never the data: a replica always re-reads the store.
"""

from __future__ import annotations

from dataclasses import dataclass

# Principals, projects, device operations, credentials, access requests.
ACCESS = "access"
# The device registry: device records (status, quarantine), revocations, reference values.
DEVICES = "devices"
# One device's jobs (queued, taken, finished): "jobs:<device id>".
_JOBS = "jobs:"


def jobs(device_id: str) -> str:
    return _JOBS + device_id


@dataclass(frozen=True, slots=True)
class Change:
    """One parsed notification: a topic, and for job changes the device whose queue moved."""

    topic: str
    device_id: str = ""


def parse(payload: str) -> Change | None:
    """The change a payload names, or None for one this broker does not know (ignored, so a
    newer replica can add topics)."""
    if payload in (ACCESS, DEVICES):
        return Change(payload)
    if payload.startswith(_JOBS) and len(payload) > len(_JOBS):
        return Change("jobs", payload[len(_JOBS) :])
    return None
