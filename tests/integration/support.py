"""Helpers for integration tests: waiting on job states and broker ticks, reading the audit log
and metrics."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attestation.keys import KeyKind, SigningKey
from drivers.config import DriverConfig, load_driver_config
from drivers.measure import measure
from qtestbed.client import Client
from qtestbed.testing import LocalFacility, eventually
from qtestbed.v1 import jobs_pb2
from tests.integration.attester import Attester, LinkEndpoint


def state_name(job: jobs_pb2.Job) -> str:
    return jobs_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_")


def wait_state(client: Client, job_id: str, *states: str, timeout: float = 60.0) -> jobs_pb2.Job:
    def reached() -> jobs_pb2.Job | None:
        job = client.get_job(job_id)
        return job if state_name(job) in states else None

    return eventually(reached, timeout=timeout, what=f"job {job_id} to reach {states}")


def with_calls_table(facility: LocalFacility, table: str) -> None:
    """Put a `[calls]` table (its body: `key = value` lines) into the facility's broker.toml,
    before any [timing] table (which `start_broker_process` rewrites)."""
    path = facility.root / "broker.toml"
    text = path.read_text()
    calls = f"[calls]\n{table.strip()}\n"
    head, timing, tail = text.partition("[timing]")
    path.write_text(f"{head}{calls}{timing}{tail}" if timing else f"{text}\n{calls}")


def db_path(facility: LocalFacility) -> Path:
    return facility.root / "broker.db"


def audit_kinds(facility: LocalFacility, subject: str | None = None) -> list[str]:
    """Audit event kinds straight from the SQLite file, in log order."""
    with sqlite3.connect(db_path(facility)) as conn:
        if subject is None:
            rows = conn.execute("SELECT kind FROM audit_log ORDER BY seq").fetchall()
        else:
            rows = conn.execute(
                "SELECT kind FROM audit_log WHERE subject = ? ORDER BY seq", (subject,)
            ).fetchall()
    return [str(r[0]) for r in rows]


@dataclass(frozen=True, kw_only=True, slots=True)
class AuditRow:
    """One audit entry as stored, its detail decoded from JSON."""

    seq: int
    kind: str
    subject: str
    detail: dict[str, Any]


def audit_entries(
    facility: LocalFacility, *, kind: str | None = None, after_seq: int = 0
) -> list[AuditRow]:
    """Audit entries after `after_seq` (of one kind, if given) straight from SQLite, in order."""
    query = "SELECT seq, kind, subject, detail FROM audit_log WHERE seq > ?"
    params: tuple[object, ...] = (after_seq,)
    if kind is not None:
        query += " AND kind = ?"
        params += (kind,)
    with closing(sqlite3.connect(db_path(facility))) as conn:
        rows = conn.execute(query + " ORDER BY seq", params).fetchall()
    return [
        AuditRow(seq=int(seq), kind=str(k), subject=str(subject), detail=json.loads(detail))
        for seq, k, subject, detail in rows
    ]


def last_audit_seq(facility: LocalFacility) -> int:
    with closing(sqlite3.connect(db_path(facility))) as conn:
        (seq,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM audit_log").fetchone()
    return int(seq)


def scrape(facility: LocalFacility) -> str:
    """The broker's metrics, scraped as the monitoring system's identity (mutual TLS)."""
    return facility.scrape()


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def link_endpoint(facility: LocalFacility, device_id: str) -> tuple[LinkEndpoint, DriverConfig]:
    """The driver link as `device_id`'s driver reaches it (its link key), and its config."""
    assert facility.addresses is not None, "start the broker first"
    config = load_driver_config(facility.root / "drivers" / f"{device_id}.toml")
    endpoint = LinkEndpoint(
        address=facility.addresses.link,
        secret_key=config.link_secret_key,
        broker_key=config.broker_link_key,
    )
    return endpoint, config


def wait_broker_ticks(
    facility: LocalFacility, count: int, *, device_id: str, timeout: float = 30.0
) -> None:
    """Return once `count` broker ticks have run that began after this call.

    Each tick heartbeats every driver connection, then asks the dispatcher to fill the queue of
    every connected device; the dispatcher, unless still busy dispatching, starts that fill
    before the next tick, and a fill that dispatches (or denies) first writes the job through
    the store's single, in-order thread. The next tick's lease reaper reads through that same
    thread, and the tick after it heartbeats only then. So once `count` = 3 ticks are seen, the
    dispatcher has looked at every connected device's queue as things stood at this call, and
    any job it dispatched is already stored (its state and its `job.dispatched` entry show it).

    The ticks are counted on a connection of their own: announced as `device_id` (pick one the
    test does not watch, so its connection count is untouched) and never attested, so it is
    never dispatched to. Only ticks that begin after its Hello heartbeat it.
    """
    endpoint, config = link_endpoint(facility, device_id)
    clock = Attester(
        endpoint,
        device_id=device_id,
        chain=b"",
        key=SigningKey.generate(KeyKind.ED25519),
        measurements=measure(config.device, config.firmware),
    )
    try:
        clock.wait_ticks(count, timeout=timeout)
    finally:
        clock.close()
