"""The audit witness as its own process against a real broker process: it cosigns checkpoints
(visible in ListCheckpoints), and it catches a fork (the broker's key signing a second head of
a size already cosigned, over a rewritten copy of the store) and a rollback (the store put back
to an earlier copy), alarming by exit status, log line, its own metric and the broker's counter.

Each attack is real: the store is copied with SQLite's backup API, rewritten with the store code
and the broker's own key (as an attacker who also holds that key would), and served by a broker
process started on it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from attestation.keys import load_private_key
from attestation.witness_log import read_witness_log
from broker.audit.checkpointer import AuditCheckpointer
from broker.audit.model import AuditEvent
from broker.audit.stored import iter_stored
from broker.store import open_store
from qtestbed.client import QtestbedError
from qtestbed.testing import LocalFacility, eventually
from qtestbed.v1 import admin_pb2
from tests.integration.audit_kit import (
    RunningWitness,
    WitnessFiles,
    checkpoints,
    copy_store,
    point_profile,
    register_witness,
    restore_store,
    stop_broker,
    wait_checkpoint_beyond,
    witness_once,
)
from tests.integration.support import metric_value, scrape

FAST_CHECKPOINTS = {"checkpoint_every_seconds": 0.5}
# After the attack: the broker signs nothing new by itself, so what the witness sees is
# exactly the attacked store's checkpoints.
NO_NEW_CHECKPOINTS = {"checkpoint_every_seconds": 3600.0, "checkpoint_every_entries": 100000}


@pytest.fixture
def witnessed(tmp_path: Path) -> Iterator[tuple[LocalFacility, WitnessFiles]]:
    with LocalFacility(tmp_path / "facility", timing=FAST_CHECKPOINTS) as facility:
        witness = register_witness(facility)
        facility.start_broker_process()
        yield facility, point_profile(facility, witness)


def _refused_cosignature(facility: LocalFacility) -> None:
    """Append one audit entry on demand: a cosignature from no registered witness is refused
    and audited."""
    sean = facility.client("sean")
    request = admin_pb2.AddCosignatureRequest(tree_size=1, envelope=b"{}")
    with pytest.raises(QtestbedError) as refused:
        sean.call(sean.audit.AddCosignature, request)
    assert refused.value.code == "PERMISSION_DENIED"


def _witness_round(facility: LocalFacility, witness: WitnessFiles) -> int:
    """Run the witness once; the tree size it cosigned."""
    done = witness_once(facility, witness)
    assert done.returncode == 0, done.stderr
    latest = read_witness_log(witness.log, _log_key(facility)).latest
    assert latest is not None
    return latest.head.tree_size


def _log_key(facility: LocalFacility):  # type: ignore[no-untyped-def]
    return load_private_key(facility.root / "broker" / "broker.key").public_key


def _cosign_twice_keeping_a_copy(
    facility: LocalFacility, witness: WitnessFiles, copy: Path
) -> tuple[int, int]:
    """The witness cosigns a head; the store is copied; more is logged and cosigned.
    Returns (entries in the copy, tree size of the newest cosigned head)."""
    sean = facility.client("sean")
    wait_checkpoint_beyond(sean, 0)
    _witness_round(facility, witness)
    copy_store(facility, copy)
    copied = _entries(copy)
    _refused_cosignature(facility)
    wait_checkpoint_beyond(sean, copied)
    newest = _witness_round(facility, witness)
    assert newest > copied
    return copied, newest


def _entries(db: Path) -> int:
    store = open_store(f"sqlite://{db}")
    try:
        return sum(1 for _ in iter_stored(store))
    finally:
        store.close()


def test_cosignatures_show_in_list_checkpoints(
    witnessed: tuple[LocalFacility, WitnessFiles],
) -> None:
    facility, witness = witnessed
    sean = facility.client("sean")
    wait_checkpoint_beyond(sean, 0)
    size = _witness_round(facility, witness)
    listed = {c.tree_size: c for c in checkpoints(sean)}
    cosigs = listed[size].cosignatures
    assert [c.witness for c in cosigs] == [witness.name]
    assert cosigs[0].key_id == load_private_key(witness.state / "witness.key").public_key.key_id
    # A second round with nothing new cosigns nothing twice.
    assert _witness_round(facility, witness) >= size
    assert len({c.tree_size: c for c in checkpoints(sean)}[size].cosignatures) == 1
    text = scrape(facility)
    assert metric_value(text, "qtestbed_audit_cosignatures_total", outcome="accepted") >= 1
    # The CLI shows each checkpoint's witnesses.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "qtestbed",
            "audit",
            "checkpoints",
            "--profile",
            str(witness.profile),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    shown = {c["tree_size"]: c for c in json.loads(done.stdout)["checkpoints"]}
    assert shown[size]["witnesses"] == [witness.name]


def test_a_fork_is_caught_by_the_running_witness(
    witnessed: tuple[LocalFacility, WitnessFiles], tmp_path: Path
) -> None:
    facility, witness = witnessed
    copy = tmp_path / "copy.db"
    _copied, cosigned = _cosign_twice_keeping_a_copy(facility, witness, copy)
    stop_broker(facility)
    # The attack: from the earlier copy, a different history of the same length, signed with
    # the broker's key, so the broker serves a second head of the size the witness cosigned.
    _forge_history(copy, facility, up_to=cosigned)
    restore_store(facility, copy)
    facility.timing.update(NO_NEW_CHECKPOINTS)
    facility.start_broker_process()
    witness = point_profile(facility, witness)
    assert cosigned in {c.tree_size for c in checkpoints(facility.client("sean"))}

    running = RunningWitness(facility, witness)
    try:
        eventually(
            lambda: _alarm_metric(running.metrics, "fork") >= 1,
            timeout=60,
            what="the witness's fork alarm on its /metrics",
        )
    finally:
        code = running.stop()
    assert code == 3
    assert "AUDIT WITNESS ALARM (fork)" in running.stderr_path.read_text()
    copy_on_file = read_witness_log(witness.log, _log_key(facility))
    assert [a.kind for a in copy_on_file.alarms] == ["fork"]
    # The broker counts the cosignature it was offered for a root it no longer has.
    assert (
        metric_value(scrape(facility), "qtestbed_audit_cosignatures_total", outcome="root_mismatch")
        >= 1
    )
    # And once alarmed, the witness cosigns nothing more, even after a restart.
    again = witness_once(facility, witness)
    assert again.returncode == 3
    assert read_witness_log(witness.log, _log_key(facility)).latest.head.tree_size == cosigned  # type: ignore[union-attr]


def test_a_rollback_is_caught(
    witnessed: tuple[LocalFacility, WitnessFiles], tmp_path: Path
) -> None:
    facility, witness = witnessed
    copy = tmp_path / "copy.db"
    copied, cosigned = _cosign_twice_keeping_a_copy(facility, witness, copy)
    stop_broker(facility)
    restore_store(facility, copy)  # the whole database put back to the earlier copy
    facility.timing.update(NO_NEW_CHECKPOINTS)
    facility.start_broker_process()
    witness = point_profile(facility, witness)
    assert max(c.tree_size for c in checkpoints(facility.client("sean"))) < cosigned

    done = witness_once(facility, witness)
    assert done.returncode == 3, done.stderr
    assert "AUDIT WITNESS ALARM (rollback)" in done.stderr
    assert (
        metric_value(
            scrape(facility), "qtestbed_audit_cosignatures_total", outcome="no_such_checkpoint"
        )
        >= 1
    )
    # The store on its own still verifies (its chain and checkpoints are self-consistent);
    # against the witness's copy it does not, and the first missing entry is named.
    config = str(facility.root / "broker.toml")
    alone = _verify(config)
    with_copy = _verify(config, "--witness", str(witness.log))
    assert alone["ok"] is True, alone
    assert with_copy["ok"] is False
    kinds = {f["kind"] for f in with_copy["findings"]}
    # The restarted broker has logged more since: either the log is now shorter than the
    # cosigned tree (rollback), or as long and no longer matching it (chain).
    assert "checkpoint_deleted" in kinds, kinds
    assert kinds & {"rollback", "chain"}, kinds
    assert with_copy["first_bad"] is not None
    assert with_copy["first_bad"] <= copied + 1


def _verify(config: str, *extra: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "qtestbed", "audit", "verify", "--config", config, "--json", *extra],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    verdict: dict[str, Any] = json.loads(done.stdout)
    assert done.returncode == (0 if verdict["ok"] else 1), done.stderr
    return verdict


def _alarm_metric(url: str, kind: str) -> float:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as reply:  # noqa: S310 (our own 127.0.0.1)
        text = reply.read().decode()
    return metric_value(text, "qtestbed_witness_alarms", kind=kind)


def _forge_history(db: Path, facility: LocalFacility, *, up_to: int) -> None:
    """Append forged entries to the copy until it holds `up_to`, and sign that head with the
    broker's key, as a broker fed these entries would have."""
    key = load_private_key(facility.root / "broker" / "broker.key")
    store = open_store(f"sqlite://{db}")
    try:
        checkpointer = AuditCheckpointer(key, existing=store.checkpoints())
        checkpointer.feed(iter_stored(store))
        while checkpointer.tree_size < up_to:
            store.append_audit(
                AuditEvent(
                    kind="device.released", actor="mallory", subject="sim-open", at=time.time()
                )
            )
            checkpointer.feed(iter_stored(store, after_seq=checkpointer.last_seq))
        store.add_checkpoint(checkpointer.make(time.time()))
    finally:
        store.close()
