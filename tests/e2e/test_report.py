"""`qtestbed report` as an operator runs it: a subprocess reading a real store.

Two ways in: a real facility (broker, driver, researchers) whose SQLite file is then reported
on and checked against plain SQL, and a store filled through the store API with a workload that
exercises every section, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import json
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from attestation.keys import load_private_key
from broker.access.documents import principal_to_doc
from broker.access.model import AccessRecord, Principal, RecordKind, Role
from broker.audit.checkpointer import AuditCheckpointer
from broker.audit.model import AuditEvent
from broker.audit.verify import iter_entries
from broker.devices.model import DeviceRecord, DeviceStatus
from broker.jobs.model import Circuit, Job, JobState, Lease
from broker.settings import load_settings
from broker.store import BrokerStore, open_store
from qtestbed.cli.demo import ghz_qasm2
from qtestbed.client import Client, QtestbedError
from qtestbed.facility_init import init_facility
from qtestbed.shared.circuits import CircuitFormat
from qtestbed.testing import LocalFacility
from qtestbed.v1 import access_pb2
from tests.e2e.console import qtestbed
from tests.integration.support import wait_state

OUTCOMES = ("completed", "failed", "cancelled", "denied", "waiting")
OUTCOME_OF_STATE = {
    "COMPLETED": "completed",
    "FAILED": "failed",
    "CANCELLED": "cancelled",
    "DENIED": "denied",
    "QUEUED": "waiting",
    "DISPATCHED": "waiting",
    "RUNNING": "waiting",
}


def iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def report(
    config: Path, since: float, until: float, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    args = ["report", "--config", str(config), "--since", iso(since), "--until", iso(until)]
    return qtestbed(*args, *extra, env=env)


def report_json(config: Path, since: float, until: float, *extra: str, **kw: Any) -> Any:
    done = report(config, since, until, "--format", "json", *extra, **kw)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def served_rows(doc: Any, dimension: str) -> dict[str, dict[str, Any]]:
    return {row["group"]: row for row in doc["served"][dimension]["rows"]}


def values(row: dict[str, Any]) -> dict[str, int | None]:
    return {k: v["value"] for k, v in row.items() if isinstance(v, dict)}


def assert_protected(doc: Any, k: int) -> None:
    """Every table row keeps individuals hidden: no shown count below k, no lone hidden cell."""
    for dimension, table in doc["served"].items():
        rows = table["rows"]
        for row in rows:
            if row["group"] != "other":
                assert row["principals"]["value"] >= k, (dimension, row)
            for column in ("principals", "jobs", "shots", *OUTCOMES):
                value = row[column]["value"]
                assert value is None or value == 0 or value >= k, (dimension, row)
            hidden = [c for c in ("jobs", *OUTCOMES) if row[c]["suppressed"]]
            assert len(hidden) != 1, (dimension, row)
        if len(rows) > 1 and not table["overlapping"]:
            for column in ("jobs", "shots", *OUTCOMES):
                assert sum(r[column]["suppressed"] for r in rows) != 1, (dimension, column)


def all_cells(doc: Any) -> list[dict[str, Any]]:
    cells = [
        cell
        for table in doc["served"].values()
        for row in table["rows"]
        for cell in row.values()
        if isinstance(cell, dict)
    ]
    cells += [row["jobs"] for row in doc["queue_wait"]["rows"]]
    return cells


# ---------------------------------------------------------------- a real facility


def _totals_from_sqlite(db: Path, since: float, until: float) -> dict[str, Any]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute(
            "SELECT state, COUNT(*), SUM(shots), COUNT(DISTINCT owner) FROM jobs"
            " WHERE created_at >= ? AND created_at < ? GROUP BY state",
            (since, until),
        ).fetchall()
        (principals,) = conn.execute(
            "SELECT COUNT(DISTINCT owner) FROM jobs WHERE created_at >= ? AND created_at < ?",
            (since, until),
        ).fetchone()
    by_state = {str(state): int(n) for state, n, _shots, _owners in rows}
    by_outcome = dict.fromkeys(OUTCOMES, 0)
    for state, n in by_state.items():
        by_outcome[OUTCOME_OF_STATE[state]] += n
    return {
        "jobs": sum(by_state.values()),
        "shots": sum(int(shots) for _s, _n, shots, _o in rows),
        "principals": int(principals),
        "by_state": by_state,
        "by_outcome": by_outcome,
    }


def _refused(call: Any, code: str) -> QtestbedError:
    with pytest.raises(QtestbedError) as caught:
        call()
    assert caught.value.code == code, caught.value
    return caught.value


def _limit_active_jobs(olivia: Client, name: str, jobs: int) -> None:
    record: access_pb2.PrincipalRecord = olivia.call(
        olivia.access.GetPrincipal, access_pb2.GetPrincipalRequest(name=name)
    )
    record.principal.quota.CopyFrom(access_pb2.Quota(max_active_jobs=jobs))
    olivia.call(
        olivia.access.PutPrincipal,
        access_pb2.PutPrincipalRequest(
            principal=record.principal, expected_version=record.meta.version
        ),
    )


def _workload(fac: LocalFacility) -> None:
    """Completed jobs of two researchers, refusals of three kinds, a cancelled and a queued job."""
    alice, bob, olivia = fac.client("alice"), fac.client("bob"), fac.client("olivia")
    fac.wait_available(alice, "sim-open")
    circuit = ghz_qasm2(3)
    submitted = [
        alice.submit(circuit, device_id="sim-open", shots=100, project="open-science").job.job_id
        for _ in range(4)
    ]
    submitted += [
        bob.submit(circuit, device_id="sim-open", shots=100, project="quantum-sensing").job.job_id
        for _ in range(3)
    ]
    for job_id in submitted[:4]:
        wait_state(alice, job_id, "COMPLETED")
    for job_id in submitted[4:]:
        wait_state(bob, job_id, "COMPLETED")
    # Refused by policy (audited), and a device above alice's tier (answered as not found).
    denied = _refused(
        lambda: alice.submit(circuit, device_id="sim-open", shots=100, project="quantum-sensing"),
        "PERMISSION_DENIED",
    )
    assert denied.rule_id == "researcher-submit/project"
    _refused(lambda: alice.submit(circuit, device_id="sim-restricted", shots=100), "NOT_FOUND")
    # sim-restricted has no driver: bob's jobs there wait; one is cancelled, one keeps waiting.
    cancelled = bob.submit(circuit, device_id="sim-restricted", shots=50).job.job_id
    bob.cancel(cancelled, "changed my mind")
    bob.submit(circuit, device_id="sim-restricted", shots=50)
    _limit_active_jobs(olivia, "bob", 1)
    _refused(
        lambda: bob.submit(circuit, device_id="sim-restricted", shots=50), "RESOURCE_EXHAUSTED"
    )


def test_the_report_of_a_real_facility_matches_its_database(tmp_path: Path) -> None:
    since = time.time() - 60
    with LocalFacility(tmp_path / "f") as fac:
        fac.start_broker()
        fac.start_driver("sim-open")
        _workload(fac)
    until = time.time() + 60
    config = fac.root / "broker.toml"
    expected = _totals_from_sqlite(fac.root / "broker.db", since, until)
    assert expected["jobs"] == 9
    assert expected["by_state"]["CANCELLED"] == 1

    exact = report_json(config, since, until, "--min-count", "1")
    totals = exact["totals"]
    assert totals["jobs"] == expected["jobs"]
    assert totals["shots"] == expected["shots"]
    assert totals["principals"] == expected["principals"]
    assert {s: n for s, n in totals["by_state"].items() if n} == expected["by_state"]
    assert totals["by_outcome"] == expected["by_outcome"]
    assert exact["audit_log"]["verified"] is True
    assert exact["audit_log"]["entries_checked"] > 0
    # min-count 1: every group on its own row, nothing hidden.
    assert not any(cell["suppressed"] for cell in all_cells(exact))
    projects = served_rows(exact, "project")
    assert set(projects) == {"open-science", "quantum-sensing"}
    assert values(projects["open-science"])["completed"] == 4
    assert values(projects["quantum-sensing"])["cancelled"] == 1
    assert values(projects["quantum-sensing"])["waiting"] == 1
    tiers = served_rows(exact, "device_tier")
    assert list(tiers) == ["open", "restricted"]  # the facility's tier order
    assert values(tiers["open"])["jobs"] == 7
    assert set(served_rows(exact, "affiliation")) == {
        "University of Example",
        "National Lab of Example",
    }
    (rule,) = exact["denials"]["rules"]
    assert (rule["stage"], rule["rule"], rule["count"]) == (
        "submit",
        "researcher-submit/project",
        1,
    )
    assert rule["reason"].startswith("researchers with a current clearance")
    assert exact["quota_refusals"]["rows"] == [
        {"scope": "principal", "limit": "active_jobs", "count": 1}
    ]
    assert exact["attestation"]["appraisals"][0]["device"] == "sim-open"
    assert exact["attestation"]["appraisals"][0]["passed"] >= 1
    (wait,) = exact["queue_wait"]["rows"]
    assert wait["group"] == "open"
    assert wait["jobs"]["value"] == 7
    assert wait["median_seconds"]["value"] >= 0

    # The default min-count (5): two researchers are too few to show any group on its own.
    default = report_json(config, since, until)
    assert default["min_count"] == 5
    assert default["totals"] == totals  # totals stay exact
    for dimension in ("device_tier", "project", "affiliation", "jurisdiction"):
        (row,) = default["served"][dimension]["rows"]
        assert row["group"] == "other"
        small = {"value": None, "suppressed": True, "why": "below_min_count"}
        assert row["principals"] == small
        assert row["cancelled"] == small
        assert row["jobs"] == {"value": 9, "suppressed": False, "why": None}
    assert_protected(default, 5)

    md = report(config, since, until)
    assert md.returncode == 0, md.stderr
    by_outcome = [expected["by_outcome"][o] for o in OUTCOMES]
    figures = [expected["jobs"], expected["shots"], expected["principals"], *by_outcome]
    assert "| " + " | ".join(f"{n:,}" for n in figures) + " |" in md.stdout
    assert "| other (2 groups) | <5 | 9 | 800 | 7 | 0 | <5 | 0 | <5 |" in md.stdout
    assert "fewer than 5 people" in md.stdout
    assert "researcher-submit/project" in md.stdout
    exact_md = report(config, since, until, "--min-count", "1")
    assert "<1" not in exact_md.stdout
    assert "| open-science |" in exact_md.stdout

    done = report(config, since, until, "--format", "csv")
    assert done.returncode == 0, done.stderr
    rows = list(csv.reader(io.StringIO(done.stdout)))
    assert rows[0] == ["section", "group", "key", "value"]
    assert ["totals", "all", "jobs", str(expected["jobs"])] in rows
    assert ["totals", "all", "shots", str(expected["shots"])] in rows
    assert ["served.project", "other", "cancelled", "<5"] in rows


# ---------------------------------------------------------------- refusing bad input


@pytest.fixture(scope="module")
def bare_facility(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A facility whose store exists but holds no jobs."""
    root = init_facility(tmp_path_factory.mktemp("bare") / "fac")
    store = open_store(load_settings(root / "broker.toml").store)
    try:
        store.migrate()
    finally:
        store.close()
    return root / "broker.toml"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "2026-01-01T00:00:00"], "has no time zone"),
        (["--since", "last tuesday"], "is not an ISO 8601 time"),
        (["--since", "2026-02-01T00:00Z", "--until", "2026-01-01T00:00Z"], "must be before"),
        (["--since", "2026-01-01T00:00Z", "--until", "2026-01-01T00:00Z"], "must be before"),
        (["--since", "2026-01-01T00:00Z", "--min-count", "0"], "--min-count"),
    ],
)
def test_bad_options_are_refused(bare_facility: Path, args: list[str], message: str) -> None:
    done = qtestbed("report", "--config", str(bare_facility), *args)
    assert done.returncode == 2
    assert message in done.stderr
    assert done.stdout == ""


def test_an_unreadable_config_or_store_is_refused(tmp_path: Path, bare_facility: Path) -> None:
    done = qtestbed(
        "report", "--config", str(tmp_path / "missing.toml"), "--since", "2026-01-01T00:00Z"
    )
    assert done.returncode == 2
    assert "cannot read broker settings" in done.stderr
    moved = bare_facility.with_name("elsewhere.toml")
    moved.write_text(bare_facility.read_text().replace("broker.db", "elsewhere.db"))
    done = qtestbed("report", "--config", str(moved), "--since", "2026-01-01T00:00Z")
    assert done.returncode == 2
    assert "no SQLite store" in done.stderr
    assert not moved.with_name("elsewhere.db").exists()  # a report never creates a store
    # The broker certificate is needed to check the audit log's signed checkpoints.
    elsewhere = tmp_path / "broker.toml"
    elsewhere.write_text(bare_facility.read_text())
    done = qtestbed("report", "--config", str(elsewhere), "--since", "2026-01-01T00:00Z")
    assert done.returncode == 2
    assert "cannot read the broker certificate" in done.stderr


def test_an_empty_period_reports_zeros(bare_facility: Path) -> None:
    doc = report_json(bare_facility, 1_767_225_600, 1_767_312_000)
    assert doc["totals"]["jobs"] == 0
    assert all(not t["rows"] for t in doc["served"].values())
    assert doc["period"] == {"since": "2026-01-01T00:00:00Z", "until": "2026-01-02T00:00:00Z"}


# ---------------------------------------------------------------- every section, both stores

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z; the period is that day
DAY = 86_400.0


@dataclass
class Seeded:
    config: Path
    env: dict[str, str]
    raw: Any  # run SQL with ? markers against the store's database


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def seeded(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Seeded]:
    root = init_facility(tmp_path / "fac")
    config = root / "broker.toml"
    if request.param == "sqlite":
        db = root / "broker.db"

        def raw_sqlite(sql: str, params: Sequence[Any] = ()) -> list[Any]:
            with contextlib.closing(sqlite3.connect(db)) as conn, conn:
                return conn.execute(sql, params).fetchall()

        _seed(open_store(load_settings(config).store), config)
        yield Seeded(config=config, env={}, raw=raw_sqlite)
        return
    import psycopg

    dsn: str = request.getfixturevalue("pg_dsn")
    schema = f"qtestbed_report_{uuid.uuid4().hex[:12]}"
    url = f"{dsn}{'&' if '?' in dsn else '?'}schema={schema}"

    def raw_pg(sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'SET search_path TO "{schema}"')
            cur = conn.execute(sql.replace("?", "%s"), params)
            return cur.fetchall() if cur.description else []

    try:
        _seed(open_store(url), config)
        yield Seeded(config=config, env={"QTESTBED_STORE": url}, raw=raw_pg)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


PEOPLE = {
    **{f"a{i}": ("Uni A", ["US"], "big") for i in range(1, 7)},
    "b1": ("Lab B", ["DE", "US"], "small"),
    "b2": ("Lab B", ["DE", "US"], "small"),
    "c1": ("Solo Inst", ["FR"], "big"),
}


def _principal(name: str, affiliation: str, jurisdictions: list[str], project: str) -> Any:
    return principal_to_doc(
        Principal(
            name=name,
            tier="restricted",
            roles=frozenset({Role.RESEARCHER}),
            affiliation=affiliation,
            jurisdictions=frozenset(jurisdictions),
            projects=(project,),
        )
    )


class _Writer:
    def __init__(self, store: BrokerStore) -> None:
        self.store = store
        self.n = 0

    def event(
        self, kind: str, subject: str, at: float, actor: str = "broker", **detail: Any
    ) -> None:
        self.store.append_audit(
            AuditEvent(kind=kind, actor=actor, subject=subject, at=at, detail=detail)
        )

    def principal(self, name: str, at: float, doc: Any, *, version: int | None = None) -> None:
        record = AccessRecord(
            kind=RecordKind.PRINCIPAL,
            name=name,
            doc=doc,
            version=(version or 0) + 1,
            updated_at=at,
            updated_by="olivia",
        )
        kind = "access.principal.updated" if version else "access.principal.created"
        event = AuditEvent(kind=kind, actor="olivia", subject=name, at=at, detail={"record": doc})
        assert self.store.put_access(record, expected_version=version, event=event)

    def device(self, device_id: str, tier: str, at: float) -> None:
        record = DeviceRecord(
            device_id=device_id,
            tier=tier,
            model="sim",
            certificate_chain_pem=b"-",
            fingerprint="ab" * 32,
            serial=device_id,
            status=DeviceStatus.ACTIVE,
            status_reason="registered",
            status_changed_at=at,
            registered_at=at,
            registered_by="facility-file",
        )
        event = AuditEvent(
            kind="device.registered", actor="facility-file", subject=device_id, at=at,
            detail={"tier": tier},
        )  # fmt: skip
        assert self.store.save_device(record, expected_version=None, event=event)

    def job(
        self,
        owner: str,
        device: str,
        created: float,
        end: JobState,
        *,
        wait: float | None = None,
        project: str = "",
    ) -> Job:
        """A job created at `created`, sent to its device `wait` seconds later (if given), then
        moved to `end`."""
        self.n += 1
        circuit = Circuit(
            format=CircuitFormat.OPENQASM2, payload=b"x", digest="cd" * 32, num_qubits=3, depth=3
        )
        job = Job(
            job_id=f"job-{self.n:03d}",
            owner=owner,
            device_id=device,
            circuit=circuit,
            shots=100,
            state=JobState.QUEUED,
            created_at=created,
            updated_at=created,
            project=project or PEOPLE[owner][2],
        )
        submitted = AuditEvent(
            kind="job.submitted", actor=owner, subject=job.job_id, at=created, detail={}
        )
        self.store.insert_job(job, submitted)
        if wait is not None:
            lease = Lease(
                lease_id="l", device_id=device, expires_at=created + 999, dispatch_nonce=b"n"
            )
            job = self._move(job, JobState.DISPATCHED, created + wait, lease=lease, attempt=1)
        if end is not JobState.QUEUED:
            job = self._move(job, end, created + (wait or 0) + 5)
        return job

    def _move(self, job: Job, state: JobState, at: float, **kw: Any) -> Job:
        attempt = kw.pop("attempt", None)
        moved = job.transition(state, now=at, **kw)
        kind = "job.dispatched" if state is JobState.DISPATCHED else f"job.{state.value.lower()}"
        detail = {"attempt": attempt} if attempt else {}
        event = AuditEvent(kind=kind, actor="broker", subject=job.job_id, at=at, detail=detail)
        assert self.store.save_job(moved, expected_version=job.version, event=event)
        return moved


def _seed(store: BrokerStore, config: Path) -> None:
    """Before, during and after the day T0: see the expectations in the test below."""
    try:
        store.migrate()
        w = _Writer(store)
        for name, (affiliation, jurisdictions, project) in PEOPLE.items():
            w.principal(name, T0 - 1000, _principal(name, affiliation, jurisdictions, project))
        w.device("dev-open", "open", T0 - 900)
        w.device("dev-res", "restricted", T0 - 900)
        w.job("a1", "dev-open", T0 - 500, JobState.COMPLETED, wait=1)  # before the period
        w.event("device.quarantined", "dev-res", T0 - 100, reason="attestation failed: X")
        w.event("device.released", "dev-res", T0 + 100, reason="fixed", **{"from": "QUARANTINED"})
        # a1..a6: two jobs each on dev-open, waiting 1..12 s; a1's second one fails.
        for i in range(12):
            owner = f"a{i % 6 + 1}"
            end = JobState.FAILED if i == 6 else JobState.COMPLETED
            w.job(owner, "dev-open", T0 + 1000 + i * 10, end, wait=float(i + 1))
        w.job("c1", "dev-open", T0 + 1200, JobState.COMPLETED, wait=100.0)
        w.job("b1", "dev-res", T0 + 1300, JobState.COMPLETED, wait=30.0)
        denied = w.job("b2", "dev-res", T0 + 1400, JobState.QUEUED)
        w._move(
            denied, JobState.DENIED, T0 + 1410, reason="no", rule_id="researcher-dispatch/project"
        )
        w.event(
            "clearance.denied", denied.job_id, T0 + 1410, stage="dispatch",
            rule="researcher-dispatch/project", device="dev-res", reason="b2 left project small",
        )  # fmt: skip
        w.job("b1", "dev-res", T0 + 1500, JobState.QUEUED)
        w.job("b2", "dev-res", T0 + 1600, JobState.CANCELLED)
        for actor, rule in (("a2", "project"), ("a2", "project"), ("c1", "tier")):
            w.event(
                "clearance.denied", "", T0 + 2000, actor=actor, stage="submit",
                rule=f"researcher-submit/{rule}", device="dev-res", reason="personal details",
            )  # fmt: skip
        w.event("quota.exceeded", "", T0 + 2100, actor="a3", scope="principal", name="a3",
                limit="active_jobs", max=2)  # fmt: skip
        w.event("quota.exceeded", "", T0 + 2200, actor="b1", scope="project", name="small",
                limit="shots_per_day", max=1000)  # fmt: skip
        for at in (T0 + 3000, T0 + 3300, T0 + 3600):
            w.event("attestation.passed", "dev-open", at, status="AFFIRMING", reasons=[])
        w.event(
            "attestation.failed", "dev-open", T0 + 4000, status="CONTRAINDICATED",
            reasons=["NONCE_STALE: evidence too old", "MEASUREMENT_MISMATCH: firmware"],
        )  # fmt: skip
        w.event("attestation.failed", "<img src=x>", T0 + 4100, reasons=["UNKNOWN_DEVICE"])
        w.event("device.quarantined", "dev-open", T0 + 5000, reason="attestation failed: M")
        w.event("anomaly.raised", "a3", T0 + 6000, detector="rate_spike", device="", rate=9.5)
        w.event("anomaly.raised", "dev-open", T0 + 6100, detector="measurement_drift",
                device="dev-open")  # fmt: skip
        # After the period: b1 moves, and one more job; neither may change the report.
        w.principal(
            "b1", T0 + DAY + 100, _principal("b1", "Moved Inst", ["JP"], "small"), version=1
        )
        w.job("a1", "dev-open", T0 + DAY + 200, JobState.COMPLETED, wait=1)
        settings = load_settings(config)
        checkpointer = AuditCheckpointer(load_private_key(settings.server_key))
        checkpointer.feed(iter_entries(store))
        store.add_checkpoint(checkpointer.make(T0 + DAY + 300))
        w.event("anomaly.raised", "a1", T0 + DAY + 400, detector="rate_spike")  # the tail
    finally:
        store.close()


def test_every_section_from_the_store(seeded: Seeded) -> None:
    doc = report_json(seeded.config, T0, T0 + DAY, "--min-count", "1", env=seeded.env)
    assert doc["store"] == ("postgresql" if seeded.env else "sqlite")
    assert doc["audit_log"]["verified"] is True
    assert doc["audit_log"]["checkpoints_checked"] == 1
    assert doc["audit_log"]["unprotected_tail"] == 1
    # Totals against plain SQL on the same database.
    rows = seeded.raw(
        "SELECT state, COUNT(*), SUM(shots) FROM jobs WHERE created_at >= ? AND created_at < ?"
        " GROUP BY state",
        (T0, T0 + DAY),
    )
    assert {s: n for s, n in doc["totals"]["by_state"].items() if n} == {
        str(s): int(n) for s, n, _ in rows
    }
    assert doc["totals"]["shots"] == sum(int(shots) for _, _, shots in rows) == 1700
    assert doc["totals"]["by_outcome"] == {
        "completed": 13,
        "failed": 1,
        "cancelled": 1,
        "denied": 1,
        "waiting": 1,
    }
    # Groups as they were at submission: b1's later move to "Moved Inst" does not count.
    affiliations = {g: values(r) for g, r in served_rows(doc, "affiliation").items()}
    assert affiliations == {
        "Uni A": _cells(6, 12, completed=11, failed=1),
        "Lab B": _cells(2, 4, completed=1, cancelled=1, denied=1, waiting=1),
        "Solo Inst": _cells(1, 1, completed=1),
    }
    jurisdictions = {g: values(r)["jobs"] for g, r in served_rows(doc, "jurisdiction").items()}
    assert jurisdictions == {"US": 16, "DE": 4, "FR": 1}
    assert doc["served"]["jurisdiction"]["overlapping"] is True
    assert list(served_rows(doc, "device_tier")) == ["open", "restricted"]

    rules = [(r["stage"], r["rule"], r["count"]) for r in doc["denials"]["rules"]]
    assert rules == [
        ("submit", "researcher-submit/project", 2),
        ("submit", "researcher-submit/tier", 1),
        ("dispatch", "researcher-dispatch/project", 1),
    ]
    assert doc["denials"]["by_stage"] == {"submit": 3, "dispatch": 1}
    reasons = [r["reason"] for r in doc["denials"]["rules"]]
    assert reasons[0].endswith("not met: project")
    assert "personal" not in json.dumps(doc)
    assert doc["quota_refusals"]["rows"] == [
        {"scope": "principal", "limit": "active_jobs", "count": 1},
        {"scope": "project", "limit": "shots_per_day", "count": 1},
    ]
    attestation = doc["attestation"]
    assert attestation["appraisals"] == [
        {"device": "(unregistered device)", "passed": 0, "failed": 1},
        {"device": "dev-open", "passed": 3, "failed": 1},
    ]
    assert [(f["device"], f["reason_code"], f["count"]) for f in attestation["failures"]] == [
        ("(unregistered device)", "UNKNOWN_DEVICE", 1),
        ("dev-open", "MEASUREMENT_MISMATCH", 1),
        ("dev-open", "NONCE_STALE", 1),
    ]
    assert attestation["quarantines"] == [
        {
            "device": "dev-res",
            "started_at": iso(T0 - 100),
            "ended_at": iso(T0 + 100),
            "outcome": "released",
            "duration_seconds": 200.0,
            "reason": "attestation failed: X",
        },
        {
            "device": "dev-open",
            "started_at": iso(T0 + 5000),
            "ended_at": None,
            "outcome": "ongoing",
            "duration_seconds": None,
            "reason": "attestation failed: M",
        },
    ]
    assert doc["anomalies"]["rows"] == [
        {"detector": "measurement_drift", "device": "dev-open", "count": 1},
        {"detector": "rate_spike", "device": None, "count": 1},
    ]
    waits = {r["group"]: r for r in doc["queue_wait"]["rows"]}
    assert waits["open"]["jobs"]["value"] == 13
    assert waits["open"]["median_seconds"]["value"] == 7.0  # 1..12 and 100
    assert waits["restricted"]["median_seconds"]["value"] == 30.0
    assert doc["notes"] == []

    # min-count 3: the small affiliations and jurisdictions share one "other" row.
    merged = report_json(seeded.config, T0, T0 + DAY, "--min-count", "3", env=seeded.env)
    assert list(served_rows(merged, "affiliation")) == ["Uni A", "other"]
    other = served_rows(merged, "affiliation")["other"]
    assert (other["groups_merged"], other["principals"]["value"], other["jobs"]["value"]) == (
        2,
        3,
        5,
    )
    jurisdiction = served_rows(merged, "jurisdiction")
    assert list(jurisdiction) == ["US", "other"]
    assert jurisdiction["other"]["jobs"]["value"] == 5  # b1, b2 (DE) and c1 (FR), each once
    assert merged["totals"] == doc["totals"]
    assert_protected(merged, 3)

    md = report(seeded.config, T0, T0 + DAY, env=seeded.env)
    assert md.returncode == 0, md.stderr
    assert "<img" not in md.stdout
    assert "still quarantined at the end of the period" in md.stdout
    assert "| dev-res | 2026-01-01T00:00:00Z" not in md.stdout  # started the day before
    assert "| dev-res | 2025-12-31T23:58:20Z | 2026-01-01T00:01:40Z | released | 3 min 20 s" in (
        md.stdout
    )


def _cells(principals: int, jobs: int, **outcomes: int) -> dict[str, int | None]:
    return {
        "principals": principals,
        "jobs": jobs,
        "shots": jobs * 100,
        **{o: outcomes.get(o, 0) for o in OUTCOMES},
    }


def test_a_tampered_log_is_reported_as_such(seeded: Seeded) -> None:
    seeded.raw("UPDATE audit_log SET kind = 'attestation.passed' WHERE kind = 'attestation.failed'")
    done = report(seeded.config, T0, T0 + DAY, "--format", "json", env=seeded.env)
    assert done.returncode == 1
    assert "did not verify" in done.stderr
    doc = json.loads(done.stdout)
    assert doc["audit_log"]["verified"] is False
    assert doc["audit_log"]["problems"]
    md = report(seeded.config, T0, T0 + DAY, env=seeded.env)
    assert md.returncode == 1
    assert "the audit log did NOT verify" in md.stdout
