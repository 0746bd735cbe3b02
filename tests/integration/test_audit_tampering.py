"""Seeded tampering of a real facility's store: every kind in `tampering_kinds.KINDS` is applied
to its own copy of a store written by a real broker process (real driver, real jobs, checkpoints
cosigned by a real witness process), and `qtestbed audit verify --witness` must catch it, naming
the first bad entry (or the range that holds it, where the original entries are gone). The
untouched store passes; without the witness copy, the kinds only a witness can see pass too,
which is why the witness exists (see the README).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from attestation.keys import load_private_key
from attestation.witness_log import read_witness_log
from broker.audit.model import AuditEntry
from broker.audit.stored import iter_stored
from broker.store import open_store
from qtestbed.cli.demo import ghz_qasm2
from qtestbed.cli.main import main
from qtestbed.testing import LocalFacility
from tests.integration.audit_kit import (
    copy_store,
    point_profile,
    register_witness,
    stop_broker,
    wait_checkpoint_beyond,
    witness_once,
)
from tests.integration.support import wait_state
from tests.integration.tampering_kinds import KINDS, Expected, Tampering, Target

TIMING = {"checkpoint_every_seconds": 0.5, "checkpoint_every_entries": 5}


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Facility:
    root: Path
    db: Path
    witness_log: Path
    target: Target  # describes the pristine store; each test copies it


@pytest.fixture(scope="module")
def facility(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Facility]:
    """A facility that ran: jobs completed, checkpoints every few entries, two witness rounds,
    a copy of the store taken in between, then a clean shutdown."""
    root = tmp_path_factory.mktemp("tampering")
    with LocalFacility(root / "facility", timing=TIMING) as fac:
        witness = register_witness(fac)
        fac.start_broker_process()
        witness = point_profile(fac, witness)
        fac.start_driver("sim-open")
        alice, sean = fac.client("alice"), fac.client("sean")
        fac.wait_available(fac.client("olivia"), "sim-open")
        _run_jobs(alice, 2)
        wait_checkpoint_beyond(sean, 0)
        assert witness_once(fac, witness).returncode == 0
        earlier = copy_store(fac, root / "earlier.db")
        earlier_entries = _count(earlier)
        _run_jobs(alice, 2)
        wait_checkpoint_beyond(sean, earlier_entries)
        assert witness_once(fac, witness).returncode == 0
        _run_jobs(alice, 1)  # logged after the last witnessed head; signed at shutdown
        for proc in fac.drivers:
            proc.terminate()
            proc.wait(30)
        fac.drivers.clear()
        stop_broker(fac)
        key = load_private_key(fac.root / "broker" / "broker.key")
        copy = read_witness_log(witness.log, key.public_key)
        store = open_store(f"sqlite://{fac.root / 'broker.db'}")
        try:
            entries = tuple(e for e in iter_stored(store) if isinstance(e, AuditEntry))
            stored = tuple(store.checkpoints())
        finally:
            store.close()
        assert stored[-1].tree_size == len(entries)  # the shutdown checkpoint covers all
        target = Target(
            db=fac.root / "broker.db",
            earlier_copy=earlier,
            earlier_entries=earlier_entries,
            key=key,
            entries=entries,
            checkpoints=stored,
            witnessed=tuple(c.head.tree_size for c in copy.checkpoints),
            every_seconds=TIMING["checkpoint_every_seconds"],
        )
        assert len(target.witnessed) == 2
        assert target.witnessed[-1] < stored[-1].tree_size
        yield Facility(root=fac.root, db=target.db, witness_log=witness.log, target=target)


def _run_jobs(alice: Any, count: int) -> None:
    jobs = [alice.submit(ghz_qasm2(3), device_id="sim-open", shots=100).job for _ in range(count)]
    for job in jobs:
        wait_state(alice, job.job_id, "COMPLETED")


def _count(db: Path) -> int:
    store = open_store(f"sqlite://{db}")
    try:
        return sum(1 for _ in iter_stored(store))
    finally:
        store.close()


def _copy(facility: Facility, name: str, tmp_path: Path) -> tuple[Path, Target]:
    """A copy of the pristine store and broker settings that point at it."""
    db = tmp_path / f"{name}.db"
    shutil.copyfile(facility.db, db)
    config = facility.root / f"verify-{name}.toml"
    text = (facility.root / "broker.toml").read_text()
    config.write_text(text.replace('store = "sqlite:broker.db"', f'store = "sqlite://{db}"'))
    return config, dataclasses.replace(facility.target, db=db)


def _verify(config: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, Any]:
    code = main(["audit", "verify", "--config", str(config), "--json", *extra])
    return code, json.loads(capsys.readouterr().out)


def test_the_untouched_store_passes(
    facility: Facility, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = _copy(facility, "untouched", tmp_path)
    code, verdict = _verify(config, capsys, "--witness", str(facility.witness_log))
    assert code == 0, verdict
    assert verdict["ok"] is True
    assert verdict["findings"] == []
    assert verdict["entries"] == facility.target.n
    assert verdict["witnessed_checkpoints"] == 2
    code, verdict = _verify(config, capsys)
    assert code == 0, verdict


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_each_tampering_is_caught_with_the_witness_copy(
    facility: Facility, kind: Tampering, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, target = _copy(facility, kind.name, tmp_path)
    expected = kind.apply(target)
    code, verdict = _verify(config, capsys, "--witness", str(facility.witness_log))
    assert code == 1, verdict
    assert verdict["ok"] is False
    _assert_named(expected, verdict)


def _assert_named(expected: Expected, verdict: Any) -> None:
    kinds = {f["kind"] for f in verdict["findings"]}
    assert expected.kinds <= kinds, (expected, verdict["findings"])
    if expected.first_bad is not None:
        assert verdict["first_bad"] == expected.first_bad, verdict["findings"]
    if expected.within is not None:
        low, high = expected.within
        assert verdict["first_bad"] is not None, verdict["findings"]
        assert low <= verdict["first_bad"] <= high, (expected.within, verdict["findings"])
    if expected.job_id is not None:
        assert expected.job_id in {f["job_id"] for f in verdict["findings"]}, verdict["findings"]


def test_malformed_rows_never_crash_verify_and_json_is_always_printed(
    facility: Facility, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Several kinds of damage at once: every one named, one verdict object, exit 1."""
    config, target = _copy(facility, "many", tmp_path)
    with target.sql() as db:
        db.execute("UPDATE audit_log SET detail = 'not json' WHERE seq = 3")
        db.execute("UPDATE audit_log SET subject = CAST(X'ff' AS TEXT) WHERE seq = 5")
        db.execute("""UPDATE audit_log SET detail = '{"a": 1, "a": 2}' WHERE seq = 7""")
    code, verdict = _verify(config, capsys)
    assert code == 1
    named = {f["seq"] for f in verdict["findings"] if f["kind"] == "malformed"}
    assert {3, 5, 7} <= named
    assert verdict["first_bad"] == 3
    assert set(verdict) >= {"ok", "entries", "checkpoints", "first_bad", "findings"}
