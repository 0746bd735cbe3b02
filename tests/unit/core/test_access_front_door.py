"""Front-door refusals: counted at once, audited once per reason and identity per window, with
a bounded number of identities however many a flood brings."""

from __future__ import annotations

import pytest

from broker.access.front_door import MAX_TRACKED, OTHERS, FrontDoor
from broker.grpc.handshakes import handshake_reason
from tests.unit.core.harness import Core, events, metric


def _door(core: Core) -> FrontDoor:
    return core.parts.registries.front_door


async def test_refusals_are_counted_at_once_and_audited_once_per_window(core: Core) -> None:
    door = _door(core)
    for _ in range(1000):
        door.refused("revoked", "alice")
    door.refused("bad_chain")
    assert metric(core, "qtestbed_front_door_refusals_total", reason="revoked") == 1000
    await door.flush()
    assert events(core, "edge.refused") == []  # the window has not run its length
    core.clock.advance(61)
    await door.flush()
    audited = events(core, "edge.refused")
    assert sorted((e.subject, e.detail["reason"], e.detail["count"]) for e in audited) == [
        ("", "bad_chain", 1),
        ("alice", "revoked", 1000),
    ]
    await door.flush(force=True)
    assert len(events(core, "edge.refused")) == 2  # nothing new: nothing written


async def test_a_flood_of_identities_is_folded_into_one_entry(core: Core) -> None:
    door = _door(core)
    for n in range(MAX_TRACKED + 500):
        door.refused("unknown_principal", f"stranger-{n}")
    await door.flush(force=True)
    audited = events(core, "edge.refused")
    assert len(audited) == MAX_TRACKED + 1
    [others] = [e for e in audited if e.subject == OTHERS]
    assert others.detail["count"] == 500


async def test_repeated_refusals_of_one_identity_raise_an_anomaly(core: Core) -> None:
    door = _door(core)
    for _ in range(core.parts.base.settings.anomaly.refusal_threshold):
        door.refused("revoked", "alice")
    await core.parts.registries.anomalies.drain()
    found = metric(core, "qtestbed_anomalies_total", detector="front_door_refusal_burst", device="")
    assert found == 1
    [finding] = events(core, "anomaly.raised")
    assert finding.subject == "alice"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (
            b"I1204 05:02:09.066 1 ssl_transport_security.cc:2563] Handshake failed with error "
            b"SSL_ERROR_SSL: error:1000007d:SSL routines:OPENSSL_internal:"
            b"CERTIFICATE_VERIFY_FAILED: certificate has expired\n",
            "expired",
        ),
        (
            b"Handshake failed with error SSL_ERROR_SSL: x: certificate is not yet valid",
            "not_yet_valid",
        ),
        (
            b"Handshake failed with error SSL_ERROR_SSL: error:1000007d:SSL routines:"
            b"OPENSSL_internal:CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate",
            "bad_chain",
        ),
        (
            b"Handshake failed with error SSL_ERROR_SSL: error:100000c0:SSL routines:"
            b"OPENSSL_internal:PEER_DID_NOT_RETURN_A_CERTIFICATE: Invalid certificate",
            "no_certificate",
        ),
        (b"Handshake failed with error SSL_ERROR_SSL: WRONG_VERSION_NUMBER", "tls_other"),
        (b"an ordinary log line", None),
    ],
)
def test_grpcs_handshake_log_lines_are_read_for_their_reason(
    line: bytes, reason: str | None
) -> None:
    assert handshake_reason(line) == reason
