"""A driver host floods the link with Evidence nobody asked for, over real CurveZMQ to a broker
in its own process: once its connection has answered its challenge, every further Evidence
frame is refused without being appraised or stored (no attestation row, no per-frame audit
entry), counted as `unsolicited_evidence` and audited in aggregate, while a real driver process
keeps running another researcher's jobs and the researcher's submits are admitted."""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from attestation.keys import load_private_key
from drivers.measure import measure
from qtestbed.cli.demo import ghz_qasm2
from qtestbed.testing import LocalFacility, eventually
from qtestbed.v1 import driver_link_pb2 as link_pb
from tests.integration.attester import Attester, LinkEndpoint, probe
from tests.integration.support import (
    audit_entries,
    db_path,
    link_endpoint,
    metric_value,
    scrape,
    wait_state,
)

FLOOD = 2000
ROGUE = "sim-restricted"  # the driver host holds this device's link key and device key


@pytest.fixture
def facility(tmp_path: Path) -> Iterator[LocalFacility]:
    # The rogue never heartbeats. With the tests' fast heartbeats (silent for 1.2 s: dropped),
    # a loaded machine that stalls this process between the rogue's answer and its flood had
    # the broker drop the rogue's connection, and the rest of the flood was refused as
    # hello_first instead (seen once in a full parallel run). Silence allowed for 30 s here.
    timing = {"link_refusal_audit_seconds": 0.5, "heartbeat_misses": 100}
    with LocalFacility(tmp_path / "facility", timing=timing) as fac:
        fac.start_broker_process()
        fac.start_driver("sim-open")
        fac.wait_available(fac.client("bob"), "sim-open")
        yield fac


def _rogue(facility: LocalFacility) -> tuple[Attester, LinkEndpoint]:
    endpoint, config = link_endpoint(facility, ROGUE)
    attester = Attester(
        endpoint,
        device_id=ROGUE,
        chain=config.device_certificate.read_bytes(),
        key=load_private_key(config.device_key),
        measurements=measure(config.device, config.firmware),
    )
    return attester, endpoint


def _attestation_rows(facility: LocalFacility) -> int:
    with closing(sqlite3.connect(db_path(facility))) as conn:
        (count,) = conn.execute("SELECT COUNT(*) FROM attestations").fetchone()
    return int(count)


def test_unsolicited_evidence_is_refused_unstored_while_others_are_served(
    facility: LocalFacility,
) -> None:
    rogue, endpoint = _rogue(facility)
    try:
        assert rogue.answer(rogue.evidence(rogue.challenge())).affirming  # the one it was asked
        rows = _attestation_rows(facility)
        audited = len(audit_entries(facility))
        for counter in range(2, FLOOD + 2):  # validly signed, each on a nonce of its own
            envelope = rogue.evidence(secrets.token_bytes(32), counter=counter)
            rogue.send(link_pb.LinkMessage(evidence=link_pb.EvidenceMessage(envelope=envelope)))
        bob = facility.client("bob")  # another researcher, submitting during the flood
        jobs = [bob.submit(ghz_qasm2(2), device_id="sim-open", shots=10).job for _ in range(3)]
        probe(endpoint)  # every frame sent before this one has been handled
        eventually(
            lambda: (
                metric_value(
                    scrape(facility), "qtestbed_link_refusals_total", reason="unsolicited_evidence"
                )
                == FLOOD
            ),
            timeout=30,
        )
        for job in jobs:
            assert wait_state(bob, job.job_id, "COMPLETED").job_id == job.job_id
        assert _attestation_rows(facility) == rows  # nothing appraised, nothing stored
        refused = eventually(
            lambda: [
                e
                for e in audit_entries(facility)
                if e.kind == "link.refused" and e.detail["reason"] == "unsolicited_evidence"
            ],
            timeout=10,
        )
        eventually(
            lambda: (
                sum(
                    e.detail["count"]
                    for e in audit_entries(facility)
                    if e.kind == "link.refused" and e.detail["reason"] == "unsolicited_evidence"
                )
                == FLOOD
            ),
            timeout=10,
        )
        assert {e.subject for e in refused} == {ROGUE}
        # In aggregate: a handful of entries per window, never one per frame.
        assert len(audit_entries(facility)) - audited < 100
    finally:
        rogue.close()
