"""The database goes away under load and comes back: meanwhile every call answers UNAVAILABLE
with retry advice (google.rpc.RetryInfo and words, never INTERNAL, never the database's words),
the outage is logged once and shown on /metrics, the broker recovers by itself, and every job
whose SubmitJob was acknowledged completes exactly once, with its result, including the jobs
that were running on the driver when the store went (their results wait in the broker).

PostgreSQL: a cluster of the test's own is crashed (`pg_ctl stop -m immediate`) and restarted.
SQLite: another process holds the file's write lock (BEGIN EXCLUSIVE, as a maintenance script
or a backup tool taking a consistent copy would) past the broker's busy timeout. That is the
realistic way a SQLite file becomes unavailable to a running broker; file permissions would not
stop it (it runs as root here, and holds the file open anyway).
"""

from __future__ import annotations

import logging
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest

from qtestbed.client import QtestbedError
from qtestbed.testing import LocalFacility, eventually
from tests.integration.outage_load import (
    DEVICE,
    SLOW_DRIVER,
    Researchers,
    assert_each_completed_once,
    assert_ran_once,
    assert_store_refusal,
    stored_audit,
    wait_running,
)
from tests.integration.pg_cluster import PgCluster
from tests.integration.support import metric_value

RESEARCHERS = ("alice", "bob")


def _start(facility: LocalFacility) -> Researchers:
    facility.start_broker()
    facility.start_driver(DEVICE, extra_config=SLOW_DRIVER)
    facility.wait_available(facility.client("olivia"), DEVICE)
    researchers = Researchers(facility, RESEARCHERS, jobs=10, seconds=30)
    researchers.start()
    wait_running(facility)
    return researchers


def _refused_while_away(
    facility: LocalFacility, researchers: Researchers, hidden: tuple[str, ...]
) -> None:
    """Every researcher's submissions, and a read, are refused the way a store outage is."""
    eventually(
        lambda: all(researchers.refused(name) for name in RESEARCHERS),
        what="every researcher to be refused during the outage",
    )
    with pytest.raises(QtestbedError) as read:
        facility.client("alice").list_jobs()
    assert_store_refusal(read.value, hidden=hidden)
    if facility.store:
        # A shared store is where a scraper's credential is checked for revocation: /metrics
        # refuses for the moment (503) rather than admit unchecked.
        with pytest.raises(urllib.error.HTTPError) as scrape:
            facility.scrape()
        scrape.value.close()
        assert scrape.value.code == 503
    else:
        assert metric_value(facility.scrape(), "qtestbed_store_available") == 0


def _recovered(
    facility: LocalFacility, researchers: Researchers, caplog: pytest.LogCaptureFixture,
    hidden: tuple[str, ...],
) -> None:  # fmt: skip
    researchers.join()
    for _, refusal in researchers.refusals:
        assert_store_refusal(refusal, hidden=hidden)
    assert_each_completed_once(facility, researchers)
    metrics = facility.scrape()
    assert metric_value(metrics, "qtestbed_store_available") == 1
    assert metric_value(metrics, "qtestbed_store_outages_total") == 1
    refused = metric_value(
        metrics, "qtestbed_unavailable_refusals_total", reason="store_unavailable"
    )
    assert refused >= len(researchers.refusals) + 1
    audited = eventually(
        lambda: [e.event for e in stored_audit(facility) if e.event.kind == "store.outage"],
        what="the outage to be audited once it ended",
    )
    assert len(audited) == 1, audited
    assert audited[0].detail["failed_calls"] > 0
    assert audited[0].detail["seconds"] > 0
    began = [r for r in caplog.records if "store outage began" in r.getMessage()]
    ended = [r for r in caplog.records if "store outage ended" in r.getMessage()]
    assert (len(began), len(ended)) == (1, 1), "an outage is logged once as it starts and ends"


def test_postgresql_crash_under_load_loses_no_acknowledged_job(
    tmp_path: Path,
    pg_cluster: PgCluster,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="broker")
    hidden = ("PostgreSQL", "psycopg", "connection", str(pg_cluster.port))
    with LocalFacility(tmp_path / "facility", store=pg_cluster.dsn) as facility:
        researchers = _start(facility)
        pg_cluster.crash()
        _refused_while_away(facility, researchers, hidden)
        kept = _wait_result_kept(caplog)
        pg_cluster.start()
        _recovered(facility, researchers, caplog, hidden)
        assert_ran_once(facility, kept)


def test_sqlite_locked_under_load_loses_no_acknowledged_job(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="broker")
    hidden = ("SQLite", "sqlite3", "locked", "broker.db")
    with LocalFacility(tmp_path / "facility") as facility:
        researchers = _start(facility)
        holder = _hold_write_lock(facility.root / "broker.db")
        try:
            _refused_while_away(facility, researchers, hidden)
            kept = _wait_result_kept(caplog)
        finally:
            assert holder.stdin is not None
            holder.stdin.close()  # the holder commits and exits: the lock is released
            holder.wait(10)
            assert holder.stdout is not None
            holder.stdout.close()
        _recovered(facility, researchers, caplog, hidden)
        assert_ran_once(facility, kept)


def _wait_result_kept(caplog: pytest.LogCaptureFixture) -> set[str]:
    """Until a result has arrived while the store is away and been kept to write later (so
    the path that must not lose it is exercised): the ids of the jobs whose results were kept."""

    def kept() -> set[str]:
        return {
            str(r.args[0])
            for r in caplog.records
            if isinstance(r.args, tuple) and "kept until the store" in r.getMessage()
        }

    return eventually(kept, timeout=20, what="a result to arrive while the store is away")


_HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
conn.execute("COMMIT")
"""


def _hold_write_lock(db: Path) -> subprocess.Popen[str]:
    """Another process holding the store file's write lock until its stdin closes."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(db)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "locked"
    return holder
