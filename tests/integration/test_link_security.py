"""The driver link is CurveZMQ: only drivers whose key the facility authorised get an answer."""

from __future__ import annotations

from pathlib import Path

import pytest
import zmq

from drivers.grants import GrantKey
from qtestbed.shared.linkkeys import LinkKeyError, configure_client, create_keypair
from qtestbed.testing import LocalFacility
from qtestbed.v1 import driver_link_pb2 as link_pb
from tests.integration.support import metric_value, scrape


def _hello_answered(facility: LocalFacility, secret: Path, broker_key: Path) -> bool:
    assert facility.addresses is not None
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        configure_client(sock, secret, broker_key)
        sock.connect(facility.addresses.link)
        hello = link_pb.Hello(
            device_id="sim-open", num_qubits=5, backend="aer", grant_key=GrantKey.new().public
        )
        sock.send(link_pb.LinkMessage(hello=hello).SerializeToString())
        return bool(sock.poll(3000))
    finally:
        sock.close()
        ctx.term()


def test_unauthorised_link_key_gets_no_answer(facility: LocalFacility, tmp_path: Path) -> None:
    facility.start_broker()
    broker_key = facility.root / "link" / "broker.key"
    _public, stranger = create_keypair(tmp_path, "stranger")
    assert not _hello_answered(facility, stranger, broker_key)
    text = scrape(facility)
    assert metric_value(text, "qtestbed_driver_connections", device="sim-open") == 0
    # The facility's own driver key is answered (a Challenge; the Hello carries no chain).
    assert _hello_answered(
        facility, facility.root / "drivers" / "sim-open-link.key_secret", broker_key
    )


def test_a_readable_link_secret_key_is_refused(tmp_path: Path) -> None:
    _public, secret = create_keypair(tmp_path, "loose")
    secret.chmod(0o644)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    try:
        with pytest.raises(LinkKeyError, match="chmod 600"):
            configure_client(sock, secret, _public)
    finally:
        sock.close(linger=0)
        ctx.term()
