"""The part of the store contract that only a SQL database can be held to: tampering behind
the store's back is detected, migrations are recorded and refused when too new, an old schema
upgrades in place, and sets are stored in one canonical text. Every test runs against SQLite
and PostgreSQL through `sql_backend.raw()` (see conftest.py); a memory database has no back
door to tamper through and no schema to migrate.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import pytest

from attestation.calibration import NO_WINDOWS, CalibrationWindows, Tolerance
from broker.audit.chain import verify_chain
from broker.devices.model import ReferenceScope
from broker.jobs.model import Circuit, Job, JobState
from broker.store import StoreError, registry_rows
from broker.store import rows as rows_module
from broker.store import schema as schema_module
from broker.store.schema import LATEST_VERSION
from qtestbed.shared.circuits import CircuitFormat
from tests.contract.test_registry_contract import (
    T0,
    event,
    make_attestation,
    make_checkpoint,
    make_reference,
    register,
)

if TYPE_CHECKING:
    from broker.store.sql_store import SqlStore
    from tests.contract.conftest import SqlBackend


def test_audit_edit_is_detected_at_its_seq(sql_backend: SqlBackend, sql_store: SqlStore) -> None:
    for i in range(4):
        sql_store.append_audit(event("clearance.denied", f"j{i}", rule="r1"))
    sql_backend.raw("UPDATE audit_log SET detail = ? WHERE seq = ?", ('{"rule":"r2"}', 3))
    assert verify_chain(sql_store.audit_entries()) == 3


def test_audit_deletion_is_detected(sql_backend: SqlBackend, sql_store: SqlStore) -> None:
    for i in range(4):
        sql_store.append_audit(event("clearance.denied", f"j{i}"))
    sql_backend.raw("DELETE FROM audit_log WHERE seq = ?", (2,))
    assert verify_chain(sql_store.audit_entries()) == 3


def test_migrations_are_recorded_once(sql_backend: SqlBackend, sql_store: SqlStore) -> None:
    sql_store.migrate()
    sql_backend.open().migrate()
    versions = sql_backend.raw("SELECT version FROM schema_migrations ORDER BY version")
    assert [row[0] for row in versions] == list(range(1, LATEST_VERSION + 1))


def test_migrate_refuses_a_newer_schema(sql_backend: SqlBackend, sql_store: SqlStore) -> None:
    sql_backend.raw(
        "INSERT INTO schema_migrations (version, description, applied_at) VALUES (?, ?, ?)",
        (LATEST_VERSION + 1, "from the future", T0),
    )
    with pytest.raises(StoreError, match=f"version {LATEST_VERSION + 1}"):
        sql_backend.open().migrate()


def test_a_starting_broker_creates_an_empty_store_and_opens_a_current_one(
    sql_backend: SqlBackend,
) -> None:
    first = sql_backend.open()
    first.open_schema()
    assert first.schema_version() == LATEST_VERSION
    again = sql_backend.open()
    again.open_schema()
    versions = sql_backend.raw("SELECT version FROM schema_migrations ORDER BY version")
    assert [row[0] for row in versions] == list(range(1, LATEST_VERSION + 1))


def test_a_starting_broker_refuses_an_older_schema_naming_qtestbed_migrate(
    sql_backend: SqlBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = sql_backend.open()
    with monkeypatch.context() as patch:  # the previous release's migrations
        patch.setattr(schema_module, "MIGRATIONS", schema_module.MIGRATIONS[:-1])
        patch.setattr(schema_module, "LATEST_VERSION", LATEST_VERSION - 1)
        old.migrate()
    starting = sql_backend.open()
    with pytest.raises(schema_module.SchemaBehind, match="qtestbed migrate") as refused:
        starting.open_schema()
    assert f"version {LATEST_VERSION - 1}" in str(refused.value)
    assert starting.schema_version() == LATEST_VERSION - 1  # nothing was applied
    assert [m.version for m in starting.upgrade()] == [LATEST_VERSION]
    starting.open_schema()


def test_a_starting_broker_refuses_a_newer_schema(
    sql_backend: SqlBackend, sql_store: SqlStore
) -> None:
    sql_backend.raw(
        "INSERT INTO schema_migrations (version, description, applied_at) VALUES (?, ?, ?)",
        (LATEST_VERSION + 1, "from the future", T0),
    )
    with pytest.raises(StoreError, match="upgrade qtestbed") as refused:
        sql_backend.open().open_schema()
    assert not isinstance(refused.value, schema_module.SchemaBehind)


def test_reference_sets_are_stored_sorted(sql_backend: SqlBackend, sql_store: SqlStore) -> None:
    """Equal sets always store as equal text, whatever order the caller's set iterates in."""
    record = make_reference(ReferenceScope.MODEL, "m", firmware=frozenset({"fw-b", "fw-a", "fw-c"}))
    sql_store.add_reference_values(record, event("reference.added", "m"))
    raw = sql_backend.raw("SELECT firmware FROM reference_values WHERE scope = ?", ("MODEL",))
    assert raw == [('["fw-a","fw-b","fw-c"]',)]


def _v1_job() -> Job:
    circuit = Circuit(
        format=CircuitFormat.QPY, payload=b"QISKIT\x00\xff", digest="ab" * 32, num_qubits=2, depth=3
    )
    return Job(
        job_id="j-v1",
        owner="alice",
        device_id="dev-a",
        circuit=circuit,
        shots=100,
        state=JobState.QUEUED,
        created_at=T0,
        updated_at=T0,
        idempotency_key="k-1",
    )


def test_a_version_1_database_upgrades_in_place(
    sql_backend: SqlBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = sql_backend
    old = backend.open()
    with monkeypatch.context() as patch:  # the code as it was before the registry existed
        patch.setattr(schema_module, "MIGRATIONS", schema_module.MIGRATIONS[:1])
        patch.setattr(schema_module, "LATEST_VERSION", 1)
        old.migrate()
    # The job row as version-1 code wrote it: every column but those added later.
    job = _v1_job()
    later = {
        "project",
        "priority",
        "session_id",
        "evidence_digest",
        "calibration_digest",
        "memory",
        "place_at",
        "queue_cost",
    }
    v1_columns = [c for c in rows_module.JOB_COLUMNS if c not in later]
    values = dict(zip(rows_module.JOB_COLUMNS, rows_module.job_to_row(job), strict=True))
    if backend.name == "sqlite":  # PostgreSQL numbers seq itself (an identity column)
        v1_columns.append("seq")
        values["seq"] = 1
    backend.raw(
        f"INSERT INTO jobs ({', '.join(v1_columns)}) VALUES ("  # noqa: S608
        + ", ".join("?" * len(v1_columns))
        + ")",
        [values[c] for c in v1_columns],
    )
    old.append_audit(event("job.submitted", "j-v1"))
    assert [row[0] for row in backend.raw("SELECT version FROM schema_migrations")] == [1]
    with pytest.raises(StoreError):
        old.get_device("dev-a")  # no registry tables yet
    old.close()

    upgraded = backend.open()
    upgraded.migrate()
    versions = backend.raw("SELECT version FROM schema_migrations ORDER BY version")
    assert [row[0] for row in versions] == [m.version for m in schema_module.MIGRATIONS]
    # Version 9 gives the queued job the place and slot cost of the default settings (aging
    # 300 s, 1 ms a shot, weight 1) and its slot in the queue book.
    job = dataclasses.replace(job, place_at=job.created_at - 300.0, queue_cost=100 * 0.001)
    assert upgraded.get_job("j-v1") == job
    assert upgraded.queue_position(job) == 1
    assert upgraded.queue_depths() == {job.device_id: 1}
    assert upgraded.insert_job(_v1_job(), event("x", "j-v1")) == (job, False)
    device = register(upgraded, "dev-a")
    assert upgraded.get_device("dev-a") == device
    upgraded.add_attestation(make_attestation("dev-a", T0), event("appraised", "dev-a"))
    assert upgraded.attestation_history("dev-a") == [make_attestation("dev-a", T0)]
    ref = upgraded.add_reference_values(make_reference(ReferenceScope.MODEL, "m"), event("r", "m"))
    assert ref.version == 1
    upgraded.add_checkpoint(make_checkpoint(1))
    entries = upgraded.audit_entries()
    assert [e.event.kind for e in entries] == [
        "job.submitted",
        "device.registered",
        "appraised",
        "r",
    ]
    assert verify_chain(entries) is None


def test_reference_values_published_before_calibration_windows_upgrade_without_any(
    sql_backend: SqlBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Version 6 adds the windows: older versions read back with none set (physical limits only)."""
    added = next(m for m in schema_module.MIGRATIONS if "calibration windows" in m.description)
    before = tuple(m for m in schema_module.MIGRATIONS if m.version < added.version)
    old = sql_backend.open()
    with monkeypatch.context() as patch:
        patch.setattr(schema_module, "MIGRATIONS", before)
        patch.setattr(schema_module, "LATEST_VERSION", before[-1].version)
        old.migrate()
    record = make_reference(ReferenceScope.DEVICE, "dev-a")
    v5_columns = [c for c in registry_rows.REFERENCE_COLUMNS if c != "calibration_windows"]
    values = dict(
        zip(registry_rows.REFERENCE_COLUMNS, registry_rows.reference_to_row(record), strict=True)
    )
    values["version"] = 1
    sql_backend.raw(
        f"INSERT INTO reference_values ({', '.join(v5_columns)}) VALUES ("  # noqa: S608
        + ", ".join("?" * len(v5_columns))
        + ")",
        [values[c] for c in v5_columns],
    )
    old.close()
    upgraded = sql_backend.open()
    upgraded.migrate()
    [stored] = upgraded.reference_values(ReferenceScope.DEVICE, "dev-a")
    assert stored == dataclasses.replace(record, version=1)
    assert stored.calibration == NO_WINDOWS
    windowed = dataclasses.replace(
        record, calibration=CalibrationWindows(two_qubit_error=Tolerance(maximum=1e-3))
    )
    assert upgraded.add_reference_values(windowed, event("r", "dev-a")).calibration == (
        windowed.calibration
    )
    upgraded.close()


def test_queued_session_jobs_are_read_from_their_index_not_the_whole_queue(
    sql_backend: SqlBackend, sql_store: SqlStore
) -> None:
    """The broker reads them at every start: a walk of every queued job grows with the queue
    (0.7 s at a million on SQLite), the partial index holds the session jobs alone."""
    from broker.store.sql_queue import queued_sessions_sql
    from tests.contract.test_store_contract import make_job

    for job_id, session_id in (("j1", ""), ("j2", "s1"), ("j3", "")):
        job = dataclasses.replace(make_job(job_id), session_id=session_id)
        sql_store.insert_job(job, event("job.submitted", job_id))
    assert sql_store.queued_sessions() == {("dev-a", "s1"): ["j2"]}
    if sql_backend.name == "sqlite":  # PostgreSQL chooses by its statistics, which grow later
        sql = queued_sessions_sql(schema_module.SQLITE)
        plan = " ".join(str(row[3]) for row in sql_backend.raw(f"EXPLAIN QUERY PLAN {sql}"))
        assert "jobs_queue_session" in plan, plan
