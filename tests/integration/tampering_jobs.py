"""Tamperings of the jobs and results tables, for the seeded tampering test.

Each kind is (name, mutate, expected): `mutate(store_url)` edits a copy of a real facility's
store the way a database administrator could (SQLite `sqlite:PATH` or a PostgreSQL URL with
`?schema=NAME`); `expected(store_url)`, called on the untouched copy just before, says which
job and which audit entry (seq) `qtestbed audit verify` must name, and a phrase of the finding.

The store these run on (see `seed_facility_jobs`) holds at least two COMPLETED jobs of alice
and one CANCELLED job. Every kind picks its job by a fixed rule (the first COMPLETED job by
submission order, ...), so `expected` and `mutate` always agree.
"""

# ruff: noqa: S608  (table and column names are this file's own constants; values are parameters)
from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from broker.store import split_schema, sqlite_path


@dataclass(frozen=True, kw_only=True, slots=True)
class Expected:
    """What a finding must name: the job, the audit entry (None: "no audit entry"), a phrase."""

    job_id: str
    seq: int | None
    phrase: str


@dataclass(frozen=True, kw_only=True, slots=True)
class TamperKind:
    name: str
    mutate: Callable[[str], None]
    expected: Callable[[str], Expected]


# --- reading and writing either store --------------------------------------------------------


def _run(url: str, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """One statement on the store at `url` (`?` placeholders), committed; its rows if any."""
    if url.startswith(("postgresql://", "postgres://")):
        dsn, schema = split_schema(url)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'SET search_path TO "{schema or "qtestbed"}"')
            cur = conn.execute(sql.replace("?", "%s"), tuple(params))
            return list(cur.fetchall()) if cur.description else []
    lite = sqlite3.connect(sqlite_path(url))
    try:
        with lite:
            return list(lite.execute(sql, tuple(params)).fetchall())
    finally:
        lite.close()


def _is_postgres(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def _jobs_in(url: str, state: str) -> list[str]:
    return [
        row[0]
        for row in _run(url, "SELECT job_id FROM jobs WHERE state = ? ORDER BY seq", (state,))
    ]


def _completed(url: str, index: int = 0) -> str:
    return _jobs_in(url, "COMPLETED")[index]


def _cancelled(url: str) -> str:
    return _jobs_in(url, "CANCELLED")[0]


def _entry_seq(url: str, job_id: str, kind: str) -> int:
    rows = _run(
        url,
        "SELECT seq FROM audit_log WHERE subject = ? AND kind = ? ORDER BY seq DESC",
        (job_id, kind),
    )
    return int(rows[0][0])


def _expect(pick: Callable[[str], str], kind: str, phrase: str) -> Callable[[str], Expected]:
    def expected(url: str) -> Expected:
        job_id = pick(url)
        return Expected(job_id=job_id, seq=_entry_seq(url, job_id, kind), phrase=phrase)

    return expected


# --- the mutations ---------------------------------------------------------------------------


def _set_job(column: str, value: Callable[[str, str], object]) -> Callable[[str], None]:
    def mutate(url: str) -> None:
        job_id = _completed(url)
        _run(url, f"UPDATE jobs SET {column} = ? WHERE job_id = ?", (value(url, job_id), job_id))

    return mutate


def _one(url: str, sql: str, job_id: str) -> Any:
    return _run(url, sql, (job_id,))[0][0]


def _shots_plus_one(url: str, job_id: str) -> object:
    return int(_one(url, "SELECT shots FROM jobs WHERE job_id = ?", job_id)) + 1


def _circuit_replaced(url: str) -> None:
    """Another job's circuit, payload and digest together, so the row agrees with itself."""
    job_id, other = _completed(url, 0), _completed(url, 1)
    payload, digest = _run(
        url, "SELECT circuit_payload, circuit_digest FROM jobs WHERE job_id = ?", (other,)
    )[0]
    _run(
        url,
        "UPDATE jobs SET circuit_payload = ?, circuit_digest = ? WHERE job_id = ?",
        (payload, digest, job_id),
    )


def _completed_to_failed(url: str) -> None:
    job_id = _completed(url)
    _run(url, "DELETE FROM results WHERE job_id = ?", (job_id,))
    _run(
        url,
        "UPDATE jobs SET state = 'FAILED', reason = 'device error: calibration lost' "
        "WHERE job_id = ?",
        (job_id,),
    )


def _cancelled_to_completed(url: str) -> None:
    """A cancelled job turned COMPLETED, with another job's result copied in as its own."""
    job_id, donor = _cancelled(url), _completed(url)
    _run(url, "UPDATE jobs SET state = 'COMPLETED' WHERE job_id = ?", (job_id,))
    _copy_result(url, donor, job_id)


def _copy_result(url: str, donor: str, job_id: str) -> None:
    _run(
        url,
        "INSERT INTO results (job_id, device_id, counts, execution_seconds, receipt, stored_at) "
        "SELECT ?, device_id, counts, execution_seconds, receipt, stored_at FROM results "
        "WHERE job_id = ?",
        (job_id, donor),
    )


def _result_for_cancelled(url: str) -> None:
    _copy_result(url, _completed(url), _cancelled(url))


def _counts_edited(url: str) -> None:
    job_id = _completed(url)
    counts = json.loads(_one(url, "SELECT counts FROM results WHERE job_id = ?", job_id))
    first = sorted(counts)[0]
    counts[first] += 1
    _run(url, "UPDATE results SET counts = ? WHERE job_id = ?", (json.dumps(counts), job_id))


def _counts_and_receipt_swapped(url: str) -> None:
    """The other job's counts and signed receipt: both valid device signatures, wrong job."""
    job_id, other = _completed(url, 0), _completed(url, 1)
    counts, receipt = _run(url, "SELECT counts, receipt FROM results WHERE job_id = ?", (other,))[0]
    _run(
        url,
        "UPDATE results SET counts = ?, receipt = ? WHERE job_id = ?",
        (counts, receipt, job_id),
    )


def _result_device_edited(url: str) -> None:
    job_id = _completed(url)
    _run(url, "UPDATE results SET device_id = 'sim-restricted' WHERE job_id = ?", (job_id,))


def _result_deleted(url: str) -> None:
    _run(url, "DELETE FROM results WHERE job_id = ?", (_completed(url),))


def _job_deleted(url: str) -> None:
    job_id = _completed(url)
    _run(url, "DELETE FROM results WHERE job_id = ?", (job_id,))
    _run(url, "DELETE FROM jobs WHERE job_id = ?", (job_id,))


_FORGED_JOB = "f0" * 16


def _job_inserted(url: str) -> None:
    """A copy of a completed job under a new id, with no audit entry at all."""
    columns = (
        [
            row[0]
            for row in _run(
                url,
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'jobs' "
                "AND table_schema = current_schema() ORDER BY ordinal_position",
            )
        ]
        if _is_postgres(url)
        else [row[1] for row in _run(url, "PRAGMA table_info(jobs)")]
    )
    rest = [c for c in columns if c not in ("job_id", "seq", "idempotency_key")]
    names = ", ".join(rest)
    # A copied PostgreSQL identity restarts at 1, so the seq is given explicitly on both.
    overriding = "OVERRIDING SYSTEM VALUE" if _is_postgres(url) else ""
    sql = (
        f"INSERT INTO jobs (job_id, seq, {names}) {overriding} SELECT ?, "
        f"(SELECT MAX(seq) + 1 FROM jobs), {names} FROM jobs WHERE job_id = ?"
    )
    _run(url, sql, (_FORGED_JOB, _completed(url)))


def _counts_not_json(url: str) -> None:
    _run(url, "UPDATE results SET counts = '{\"000\": 1' WHERE job_id = ?", (_completed(url),))


def _owner_and_entry_unchanged(url: str) -> Expected:
    return Expected(job_id=_FORGED_JOB, seq=None, phrase="never recorded its submission")


def _gone(url: str) -> Expected:
    job_id = _completed(url)
    return Expected(
        job_id=job_id, seq=_entry_seq(url, job_id, "job.completed"), phrase="job row is gone"
    )


KINDS: list[TamperKind] = [
    TamperKind(
        name="job owner edited",
        mutate=_set_job("owner", lambda url, job: "bob"),
        expected=_expect(_completed, "job.submitted", "owner is 'bob'"),
    ),
    TamperKind(
        name="job device edited",
        mutate=_set_job("device_id", lambda url, job: "sim-restricted"),
        expected=_expect(_completed, "job.submitted", "device is 'sim-restricted'"),
    ),
    TamperKind(
        name="job shots edited",
        mutate=_set_job("shots", _shots_plus_one),
        expected=_expect(_completed, "job.submitted", "shots is"),
    ),
    TamperKind(
        name="job circuit digest edited",
        mutate=_set_job("circuit_digest", lambda url, job: "ab" * 32),
        expected=_expect(_completed, "job.submitted", "circuit digest is"),
    ),
    TamperKind(
        name="job circuit replaced with another job's (payload and digest)",
        mutate=_circuit_replaced,
        expected=_expect(_completed, "job.submitted", "circuit digest is"),
    ),
    TamperKind(
        name="job project edited",
        mutate=_set_job("project", lambda url, job: "secret-project"),
        expected=_expect(_completed, "job.submitted", "project is 'secret-project'"),
    ),
    TamperKind(
        name="COMPLETED -> FAILED (result deleted)",
        mutate=_completed_to_failed,
        expected=_expect(_completed, "job.completed", "state is FAILED in the jobs table"),
    ),
    TamperKind(
        name="CANCELLED -> COMPLETED with a result copied in",
        mutate=_cancelled_to_completed,
        expected=_expect(_cancelled, "job.cancelled", "state is COMPLETED in the jobs table"),
    ),
    TamperKind(
        name="result row added to a cancelled job",
        mutate=_result_for_cancelled,
        expected=_expect(_cancelled, "job.cancelled", "results row exists but"),
    ),
    TamperKind(
        name="result counts edited",
        mutate=_counts_edited,
        expected=_expect(_completed, "job.completed", "counts do not match"),
    ),
    TamperKind(
        name="result counts and receipt swapped for another job's",
        mutate=_counts_and_receipt_swapped,
        expected=_expect(_completed, "job.completed", "counts do not match"),
    ),
    TamperKind(
        name="result device edited",
        mutate=_result_device_edited,
        expected=_expect(_completed, "job.completed", "result device is 'sim-restricted'"),
    ),
    TamperKind(
        name="job state set to a value that is no state",
        mutate=_set_job("state", lambda url, job: "DONE"),
        expected=_expect(_completed, "job.submitted", "the job row cannot be read"),
    ),
    TamperKind(
        name="result counts made unreadable (not JSON)",
        mutate=_counts_not_json,
        expected=_expect(_completed, "job.completed", "the results row cannot be read"),
    ),
    TamperKind(
        name="result row deleted",
        mutate=_result_deleted,
        expected=_expect(_completed, "job.completed", "results row is gone"),
    ),
    TamperKind(name="job row deleted", mutate=_job_deleted, expected=_gone),
    TamperKind(
        name="job row inserted without an entry",
        mutate=_job_inserted,
        expected=_owner_and_entry_unchanged,
    ),
]
