"""Refusals inside the TLS handshake (gRPC's own TLS: expired, not yet valid, an unknown CA)
reach no Python code, yet the broker process counts and audits them by reason."""

from __future__ import annotations

import datetime as dt
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from attestation.keys import KeyKind, SigningKey
from attestation.pki import create_ca
from qtestbed.client import QtestbedError
from qtestbed.testing import LocalFacility, eventually
from tests.integration.identity_kit import Minter
from tests.integration.support import audit_entries, metric_value, scrape


@pytest.fixture
def facility(tmp_path: Path) -> Iterator[LocalFacility]:
    with LocalFacility(tmp_path / "facility", timing={"front_door_audit_seconds": 0.3}) as fac:
        fac.start_broker_process()
        yield fac


def test_handshake_refusals_are_counted_and_audited_by_reason(
    facility: LocalFacility, tmp_path: Path
) -> None:
    minter = Minter(facility, tmp_path / "minted")
    stranger_key = SigningKey.generate(KeyKind.ECDSA_P256)
    stranger = create_ca(
        "not this facility", stranger_key, now=dt.datetime.now(dt.UTC), days=30, path_length=1
    )
    attempts = {
        "expired": minter.client(name="alice", starts_in=dt.timedelta(days=-3), days=1)[0],
        "not_yet_valid": minter.client(name="alice", starts_in=dt.timedelta(days=2))[0],
        "bad_chain": minter.client(name="alice", issuer=(stranger_key, stranger))[0],
    }
    for client in attempts.values():
        with pytest.raises(QtestbedError) as refused:
            client.devices()
        assert refused.value.code == "UNAVAILABLE"  # the handshake never completed

    def counted() -> dict[str, float] | None:
        text = scrape(facility)
        found = {
            reason: metric_value(text, "qtestbed_front_door_refusals_total", reason=reason)
            for reason in attempts
        }
        return found if all(found.values()) else None

    counts = eventually(counted, timeout=20, what="the handshake refusals to be counted")
    assert all(count >= 1 for count in counts.values()), counts

    def audited() -> set[str] | None:
        reasons = {str(r.detail["reason"]) for r in audit_entries(facility, kind="edge.refused")}
        return reasons if set(attempts) <= reasons else None

    eventually(audited, timeout=20, what="edge.refused entries for every reason")
    # A refused handshake names nobody: the entries carry no identity.
    assert all(r.subject == "" for r in audit_entries(facility, kind="edge.refused"))
    assert facility.client("alice").devices()  # the front door still serves who it should


def test_the_watcher_ends_with_the_broker(facility: LocalFacility) -> None:
    """The watcher's pipe is also the standard error of the broker's decoder children: it is
    stopped only after they are gone, so its thread ends instead of waiting out its join (a
    SIGTERM took five seconds longer than it needed to before)."""
    facility.client("alice").devices()  # the broker answers: its decoder children are up
    proc = facility.broker_process
    assert proc is not None
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    facility.broker_process = None
    log = (facility.root / "broker.log").read_text()
    assert "handshake watcher did not end" not in log, log[-2000:]
