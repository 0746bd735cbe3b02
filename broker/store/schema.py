"""The one schema both stores share, as numbered migrations.

Each migration is a list of SQL templates; `{placeholders}` stand for the few types that differ
between SQLite and PostgreSQL, so the table definitions themselves are written once. A store
records every applied version in `schema_migrations` and refuses a database that is newer than
this code: an older broker writing into a newer schema could silently corrupt it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from broker.store.base import StoreError


@dataclass(frozen=True, kw_only=True, slots=True)
class Dialect:
    """What differs between the two databases, and nothing else."""

    name: str
    types: Mapping[str, str]  # template placeholder -> column type/definition
    begin: str  # statement that starts a write transaction
    job_seq: str  # SQL for the seq value of a new job row
    # The FROM of the read of every queued session job (broker.store.sql_queue), which must
    # walk their partial index (jobs_queue_session), not every queued job: see each dialect.
    session_jobs: str


SQLITE = Dialect(
    name="sqlite",
    types={
        "blob": "BLOB",
        "real": "REAL",
        "bigint": "INTEGER",
        "job_seq": "INTEGER NOT NULL",
        # An alias of the rowid: SQLite assigns max + 1 when the insert leaves it out.
        "seq_pk": "INTEGER PRIMARY KEY",
    },
    # IMMEDIATE takes the write lock up front, so two writers never deadlock on an upgrade.
    begin="BEGIN IMMEDIATE",
    # Safe only because BEGIN IMMEDIATE makes this transaction the single writer.
    job_seq="(SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs)",
    # Without table statistics SQLite prefers the equality on state (jobs_state_device), which
    # visits every queued job to find the few in a session: 0.7 s a million at each start.
    # INDEXED BY also refuses the query, rather than run it slowly, if the index is missing.
    session_jobs="jobs INDEXED BY jobs_queue_session",
)

POSTGRES = Dialect(
    name="postgresql",
    types={
        "blob": "BYTEA",
        "real": "DOUBLE PRECISION",
        "bigint": "BIGINT",
        "job_seq": "BIGINT GENERATED ALWAYS AS IDENTITY",
        "seq_pk": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    },
    begin="BEGIN",
    # A sequence, not MAX+1: several replicas insert concurrently.
    job_seq="DEFAULT",
    # No index hints in PostgreSQL: with its statistics the planner walks jobs_queue_session
    # (an index-only scan with a million queued, measured after VACUUM ANALYZE).
    session_jobs="jobs",
)


@dataclass(frozen=True, kw_only=True, slots=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]
    # Statements only one database needs (by `Dialect.name`), run after the shared ones and
    # taken as written (no placeholders): triggers, whose syntax the two do not share.
    by_dialect: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def sql(self, dialect: Dialect) -> list[str]:
        shared = [stmt.format_map(dialect.types) for stmt in self.statements]
        return shared + list(self.by_dialect.get(dialect.name, ()))


BOOTSTRAP = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version INTEGER PRIMARY KEY,"
    " description TEXT NOT NULL,"
    " applied_at {real} NOT NULL)"
)

_V1_JOBS = """
CREATE TABLE jobs (
    job_id TEXT PRIMARY KEY,
    seq {job_seq} UNIQUE,
    owner TEXT NOT NULL,
    device_id TEXT NOT NULL,
    state TEXT NOT NULL,
    shots INTEGER NOT NULL,
    circuit_format TEXT NOT NULL,
    circuit_payload {blob} NOT NULL,
    circuit_digest TEXT NOT NULL,
    num_qubits INTEGER NOT NULL,
    depth INTEGER NOT NULL,
    idempotency_key TEXT,
    attempts INTEGER NOT NULL,
    lease_id TEXT,
    lease_device_id TEXT,
    lease_expires_at {real},
    dispatch_nonce {blob},
    reason TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    created_at {real} NOT NULL,
    updated_at {real} NOT NULL,
    dispatched_at {real},
    started_at {real},
    finished_at {real},
    version {bigint} NOT NULL,
    UNIQUE (owner, idempotency_key)
)
"""

_V1_RESULTS = """
CREATE TABLE results (
    job_id TEXT PRIMARY KEY REFERENCES jobs (job_id),
    device_id TEXT NOT NULL,
    counts TEXT NOT NULL,
    execution_seconds {real} NOT NULL,
    receipt {blob} NOT NULL,
    stored_at {real} NOT NULL
)
"""

_V1_AUDIT = """
CREATE TABLE audit_log (
    seq {bigint} PRIMARY KEY,
    kind TEXT NOT NULL,
    actor TEXT NOT NULL,
    subject TEXT NOT NULL,
    at {real} NOT NULL,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    entry_hash TEXT NOT NULL
)
"""

# Registry tables (version 2). The four measurement sets of reference_values and the reasons
# of an attestation are JSON arrays (sets sorted, so equal sets store equal text).
_V2_DEVICES = """
CREATE TABLE devices (
    device_id TEXT PRIMARY KEY,
    tier TEXT NOT NULL,
    model TEXT NOT NULL,
    certificate_chain_pem {blob} NOT NULL,
    fingerprint TEXT NOT NULL,
    serial TEXT NOT NULL,
    status TEXT NOT NULL,
    status_reason TEXT NOT NULL,
    status_changed_at {real} NOT NULL,
    registered_at {real} NOT NULL,
    registered_by TEXT NOT NULL,
    version {bigint} NOT NULL
)
"""

_V2_REFERENCE_VALUES = """
CREATE TABLE reference_values (
    scope TEXT NOT NULL,
    scope_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    firmware TEXT NOT NULL,
    control_software TEXT NOT NULL,
    driver_build TEXT NOT NULL,
    calibration_digest TEXT NOT NULL,
    num_qubits INTEGER NOT NULL,
    not_before {real},
    not_after {real},
    created_at {real} NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (scope, scope_id, version)
)
"""

_V2_REVOCATIONS = """
CREATE TABLE revocations (
    serial TEXT PRIMARY KEY,
    device_id TEXT NOT NULL,
    revoked_at {real} NOT NULL,
    revoked_by TEXT NOT NULL,
    reason TEXT NOT NULL
)
"""

# No foreign key to devices: failed appraisals of unregistered devices are worth keeping too.
_V2_ATTESTATIONS = """
CREATE TABLE attestations (
    seq {seq_pk},
    device_id TEXT NOT NULL,
    at {real} NOT NULL,
    status TEXT NOT NULL,
    reasons TEXT NOT NULL,
    evidence_digest TEXT NOT NULL,
    evidence {blob} NOT NULL,
    expires_at {real} NOT NULL
)
"""

_V2_CHECKPOINTS = """
CREATE TABLE audit_checkpoints (
    tree_size {bigint} PRIMARY KEY,
    root_hash TEXT NOT NULL,
    at {real} NOT NULL,
    key_id TEXT NOT NULL,
    envelope {blob} NOT NULL
)
"""

# Access records (version 4): principals, projects and device operations as JSON documents.
_V4_ACCESS = """
CREATE TABLE access_records (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    doc TEXT NOT NULL,
    version {bigint} NOT NULL,
    updated_at {real} NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (kind, name)
)
"""

# Sessions (version 5): a researcher's hold on one device for back-to-back jobs.
_V5_SESSIONS = """
CREATE TABLE sessions (
    session_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    device_id TEXT NOT NULL,
    project TEXT NOT NULL,
    state TEXT NOT NULL,
    opened_at {real} NOT NULL,
    last_activity_at {real} NOT NULL,
    closes_at {real} NOT NULL,
    idle_timeout_seconds {real} NOT NULL,
    closed_reason TEXT NOT NULL,
    closed_at {real},
    jobs INTEGER NOT NULL,
    version {bigint} NOT NULL
)
"""

# Access changes (version 10): a counter every write to access_records moves, by trigger, so
# the access fingerprint the replicas poll sees any change, even a direct edit that keeps a
# record's version and time. One row; a statement-level trigger on PostgreSQL.
_V10_BUMP = "UPDATE access_changes SET counter = counter + 1 WHERE id = 1"
_V10_SQLITE_TRIGGERS = tuple(
    f"CREATE TRIGGER access_records_{event.lower()} AFTER {event} ON access_records"
    f" BEGIN {_V10_BUMP}; END"
    for event in ("INSERT", "UPDATE", "DELETE")
)
_V10_POSTGRES_TRIGGER = (
    # The store's schema, fixed when the function is made: an edit from a session whose
    # search_path differs (a DBA's psql) must still move this schema's counter.
    "CREATE FUNCTION access_records_changed() RETURNS trigger LANGUAGE plpgsql"
    f" SET search_path FROM CURRENT AS $$ BEGIN {_V10_BUMP}; RETURN NULL; END $$",
    "CREATE TRIGGER access_records_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE"
    " ON access_records FOR EACH STATEMENT EXECUTE FUNCTION access_records_changed()",
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        version=1,
        description="jobs, results and the audit chain",
        statements=(
            _V1_JOBS,
            _V1_RESULTS,
            _V1_AUDIT,
            # Serves queued_jobs (each device's queue in submission order).
            "CREATE INDEX jobs_device_state_seq ON jobs (device_id, state, seq)",
            # Serves list_jobs for one owner, newest first.
            "CREATE INDEX jobs_owner_seq ON jobs (owner, seq)",
            # Serves queue_depths and leased_jobs without scanning finished jobs.
            "CREATE INDEX jobs_state_device ON jobs (state, device_id)",
        ),
    ),
    Migration(
        version=2,
        description="device registry, reference values, revocations, attestations, checkpoints",
        statements=(
            _V2_DEVICES,
            _V2_REFERENCE_VALUES,
            _V2_REVOCATIONS,
            _V2_ATTESTATIONS,
            _V2_CHECKPOINTS,
            # Serves attestation_history: one device's appraisals, newest first.
            "CREATE INDEX attestations_device_at ON attestations (device_id, at)",
        ),
    ),
    Migration(
        version=3,
        description="the project a job is submitted under (checked again at dispatch)",
        statements=("ALTER TABLE jobs ADD COLUMN project TEXT NOT NULL DEFAULT ''",),
    ),
    Migration(
        version=4,
        description="principals, projects and device operations managed by operators",
        statements=(
            _V4_ACCESS,
            # Serve the quota counts (active jobs, shots in the last day) per owner and project.
            "CREATE INDEX jobs_owner_state_created ON jobs (owner, state, created_at)",
            "CREATE INDEX jobs_project_state_created ON jobs (project, state, created_at)",
        ),
    ),
    Migration(
        version=5,
        description="priorities, sessions, and the evidence and calibration a job ran under",
        statements=(
            "ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 2",
            "ALTER TABLE jobs ADD COLUMN session_id TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE jobs ADD COLUMN evidence_digest TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE jobs ADD COLUMN calibration_digest TEXT NOT NULL DEFAULT ''",
            _V5_SESSIONS,
            "CREATE INDEX sessions_device_state ON sessions (device_id, state)",
        ),
    ),
    Migration(
        version=6,
        description="calibration windows in reference values",
        # {figure: [minimum, maximum]} as JSON; '{}' (no window) for versions published before.
        statements=(
            "ALTER TABLE reference_values"
            " ADD COLUMN calibration_windows TEXT NOT NULL DEFAULT '{{}}'",
        ),
    ),
    Migration(
        version=7,
        description="the circuit a device ran when it translated the one submitted",
        # OpenQASM 3 text; NULL (results stored before) and empty both mean "ran as sent".
        statements=("ALTER TABLE results ADD COLUMN executed_circuit {blob}",),
    ),
    Migration(
        version=8,
        description="per-shot memory: asked for on jobs, packed with results",
        # Packed as attestation.shot_memory lays it out (ceil(width / 8) bytes a shot, bounded
        # by MAX_MEMORY_BITS); NULL and width 0 for results without memory.
        statements=(
            "ALTER TABLE jobs ADD COLUMN memory INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE results ADD COLUMN memory {blob}",
            "ALTER TABLE results ADD COLUMN memory_width INTEGER NOT NULL DEFAULT 0",
        ),
    ),
)

# Version 9: the queue book (broker.store.sql_queue). Existing queued jobs are given their place
# and cost as a broker with the default settings would have (aging 300 s, 1 ms a shot, weight
# 1), and each project's slots in submission order from virtual time 0, as a restart did.
_V9_QUEUE = (
    "ALTER TABLE jobs ADD COLUMN place_at {real} NOT NULL DEFAULT 0",
    "ALTER TABLE jobs ADD COLUMN queue_cost {real} NOT NULL DEFAULT 0",
    "UPDATE jobs SET place_at = created_at - (priority - 1) * 300.0,"
    " queue_cost = (CASE WHEN shots > 1 THEN shots ELSE 1 END) * 0.001",
    "CREATE TABLE queue_lanes (device_id TEXT NOT NULL, project TEXT NOT NULL,"
    " head {bigint} NOT NULL, tail {bigint} NOT NULL, last_tag {real} NOT NULL,"
    " PRIMARY KEY (device_id, project))",
    "CREATE TABLE queue_slots (device_id TEXT NOT NULL, project TEXT NOT NULL,"
    " ordinal {bigint} NOT NULL, tag {real} NOT NULL, PRIMARY KEY (device_id, project, ordinal))",
    "CREATE TABLE queue_clocks (device_id TEXT PRIMARY KEY, virtual_time {real} NOT NULL)",
    # Counts the slots ahead of a slot (positions).
    "CREATE INDEX queue_slots_order ON queue_slots (device_id, tag, project, ordinal)",
    # A lane's jobs in place order, and a session's; queued jobs only.
    "CREATE INDEX jobs_queue_place ON jobs (device_id, project, place_at, job_id)"
    " WHERE state = 'QUEUED'",
    "CREATE INDEX jobs_queue_session ON jobs (device_id, session_id, project, place_at, job_id)"
    " WHERE state = 'QUEUED' AND session_id <> ''",
    "INSERT INTO queue_slots (device_id, project, ordinal, tag)"
    " SELECT device_id, project,"
    " ROW_NUMBER() OVER (PARTITION BY device_id, project ORDER BY created_at, job_id) - 1,"
    " SUM(queue_cost) OVER (PARTITION BY device_id, project ORDER BY created_at, job_id)"
    " FROM jobs WHERE state = 'QUEUED'",
    "INSERT INTO queue_lanes (device_id, project, head, tail, last_tag)"
    " SELECT device_id, project, 0, COUNT(*), MAX(tag) FROM queue_slots"
    " GROUP BY device_id, project",
)

MIGRATIONS = (
    *MIGRATIONS,
    Migration(
        version=9,
        description="the queue book: each project's fair-queueing slots per device, by index",
        statements=_V9_QUEUE,
    ),
    Migration(
        version=10,
        description="a change counter on access records, moved by trigger",
        statements=(
            "CREATE TABLE access_changes (id INTEGER PRIMARY KEY, counter {bigint} NOT NULL)",
            "INSERT INTO access_changes (id, counter) VALUES (1, 0)",
        ),
        by_dialect={"sqlite": _V10_SQLITE_TRIGGERS, "postgresql": _V10_POSTGRES_TRIGGER},
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version

# What an operator runs to bring an existing store up to this code's schema.
MIGRATE_COMMAND = "qtestbed migrate --config BROKER_TOML"


class SchemaBehind(StoreError):
    """The store holds data under an older schema: a broker does not upgrade it on its own."""


def pending(current: int) -> list[Migration]:
    """Migrations still to apply to a database at `current`; refuses a newer database."""
    if current > LATEST_VERSION:
        raise StoreError(
            f"database schema is version {current} but this qtestbed knows only up to "
            f"{LATEST_VERSION}; upgrade qtestbed instead of running an older broker on it"
        )
    return [m for m in MIGRATIONS if m.version > current]


def to_serve(current: int) -> list[Migration]:
    """What a starting broker applies to a database at `current`: the whole schema to an empty
    one (version 0), nothing to one at this code's version; any other refuses.

    An existing store is upgraded only by `qtestbed migrate`, a step of its own: migrations are
    forward-only, so the operator backs the store up first, and every broker (replicas running
    the previous release included) is stopped while the schema changes under it.
    """
    if current in (0, LATEST_VERSION):
        return pending(current)
    pending(current)  # refuses a newer schema, naming it
    raise SchemaBehind(
        f"database schema is version {current} but this broker needs version {LATEST_VERSION}; "
        f"stop every broker on this store, back it up, then run `{MIGRATE_COMMAND}` "
        "(see docs/operations.md, Upgrades)"
    )
