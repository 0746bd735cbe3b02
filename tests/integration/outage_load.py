"""Researchers submitting under load while the store goes away, and the checks that an outage
lost and duplicated nothing (shared by the PostgreSQL and SQLite outage tests).

Each researcher submits a bounded number of jobs within a bounded time from a thread of its
own. A refusal is retried with the same idempotency key, as a client following the advice
would (after a short pause: the test does not wait the advised seconds). A submission counts as
acknowledged only when SubmitJob answered with a job.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

from broker.audit.model import AuditEntry
from broker.store import open_store
from qtestbed.cli.demo import ghz_qasm2
from qtestbed.client import QtestbedError
from qtestbed.testing import LocalFacility, eventually
from tests.integration.support import state_name, wait_state

DEVICE = "sim-open"
# Long enough that a job is still running on the driver when the store goes away.
SLOW_DRIVER = "min_execution_seconds = 0.3"


class Researchers:
    def __init__(
        self, facility: LocalFacility, names: tuple[str, ...], *, jobs: int, seconds: float
    ) -> None:
        self._facility = facility
        self._jobs = jobs
        self._until = time.monotonic() + seconds
        self._lock = threading.Lock()
        self.acknowledged: dict[str, str] = {}  # job id -> researcher
        self.refusals: list[tuple[str, QtestbedError]] = []  # (researcher, refusal)
        self._threads = [
            threading.Thread(target=self._submit_all, args=(name,), daemon=True) for name in names
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def join(self) -> None:
        for thread in self._threads:
            thread.join(timeout=max(self._until - time.monotonic(), 0) + 30)
            assert not thread.is_alive(), "a researcher's submissions did not end in time"

    def refused(self, name: str) -> int:
        with self._lock:
            return sum(1 for who, _ in self.refusals if who == name)

    def _submit_all(self, name: str) -> None:
        client = self._facility.client(name)
        for _ in range(self._jobs):
            key = uuid.uuid4().hex
            while time.monotonic() < self._until:
                try:
                    job = client.submit(ghz_qasm2(2), device_id=DEVICE, shots=20,
                                        idempotency_key=key).job  # fmt: skip
                except QtestbedError as exc:
                    with self._lock:
                        self.refusals.append((name, exc))
                    time.sleep(0.1)
                    continue
                with self._lock:
                    self.acknowledged[job.job_id] = name
                break
            time.sleep(0.05)  # a steady stream, so the load spans the outage


def assert_store_refusal(exc: QtestbedError, *, hidden: tuple[str, ...]) -> None:
    """UNAVAILABLE with retry advice (words and RetryInfo), and no word of the database's."""
    assert exc.code == "UNAVAILABLE", exc
    assert exc.retry_after_seconds is not None, exc
    assert exc.retry_after_seconds > 0, exc
    assert "try again in a few seconds" in exc.message
    for word in hidden:
        assert word not in exc.message, exc.message


def wait_running(facility: LocalFacility) -> None:
    """Until some job is running on the driver (so one is in flight when the store goes)."""
    alice = facility.client("alice")
    eventually(
        lambda: any(state_name(j) == "RUNNING" for j in alice.list_jobs(page_size=100)),
        what="a job to be running on the driver",
    )


def assert_each_completed_once(facility: LocalFacility, researchers: Researchers) -> None:
    """Every acknowledged job completed, once, with its result; the audit log verifies."""
    assert researchers.acknowledged, "no submission was acknowledged"
    clients = {name: facility.client(name) for name in set(researchers.acknowledged.values())}
    for job_id, name in researchers.acknowledged.items():
        client = clients[name]
        done = wait_state(client, job_id, "COMPLETED", timeout=60)
        result = client.result(job_id)
        assert sum(result.counts.values()) == 20
        assert client.verify_result(result, done) == []
    completions = Counter(
        e.event.subject for e in stored_audit(facility) if e.event.kind == "job.completed"
    )
    for job_id in researchers.acknowledged:
        assert completions[job_id] == 1, f"job {job_id} completed {completions[job_id]} times"
    assert_audit_verifies(facility)


def stored_audit(facility: LocalFacility) -> list[AuditEntry]:
    store = open_store(facility.store or f"sqlite:{facility.root / 'broker.db'}")
    try:
        entries: list[AuditEntry] = []
        after = 0
        while batch := store.audit_entries(after_seq=after, limit=1000):
            entries.extend(batch)
            after = batch[-1].seq
        return entries
    finally:
        store.close()


def assert_audit_verifies(facility: LocalFacility) -> None:
    """`qtestbed audit verify` passes on the store the broker wrote through the outage."""
    text = (facility.root / "broker.toml").read_text()
    config = facility.root / "verify-after-outage.toml"
    if facility.store:
        text = text.replace('store = "sqlite:broker.db"', f'store = "{facility.store}"')
    config.write_text(text)
    done = subprocess.run(
        [sys.executable, "-m", "qtestbed", "audit", "verify", "--config", str(config), "--json"],
        capture_output=True, text=True, timeout=60, check=False, cwd=Path(facility.root),
    )  # fmt: skip
    verdict = json.loads(done.stdout)
    assert done.returncode == 0, verdict
    assert verdict["ok"] is True, verdict


def assert_ran_once(facility: LocalFacility, job_ids: set[str]) -> None:
    """Each job was dispatched once and never requeued: its result, which arrived while the
    store was away, was kept and written, not dropped and the job run again."""
    kinds: dict[str, list[str]] = {job_id: [] for job_id in job_ids}
    for entry in stored_audit(facility):
        if entry.event.subject in kinds:
            kinds[entry.event.subject].append(entry.event.kind)
    for job_id, seen in kinds.items():
        assert seen.count("job.dispatched") == 1, (job_id, seen)
        assert "job.requeued" not in seen, (job_id, seen)
        assert seen.count("job.completed") == 1, (job_id, seen)
