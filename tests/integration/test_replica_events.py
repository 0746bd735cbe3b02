"""Replicas on one PostgreSQL schema hear each other's changes as notifications: with the
fallback poll set to a minute, queue and device-registry changes made through one replica
still take effect on the other at once."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.embedded import EmbeddedBroker
from qtestbed.cli.demo import ghz_qasm2
from qtestbed.client import Client, Profile
from qtestbed.testing import LocalFacility, eventually
from qtestbed.v1 import admin_pb2
from tests.integration.conftest import drop_schema, fresh_schema
from tests.integration.support import state_name, wait_state

pytestmark = pytest.mark.postgres

# Long enough that nothing below can be the poll's doing.
POLL_SECONDS = 60.0


@pytest.fixture
def two_replicas(tmp_path: Path, pg_dsn: str) -> Iterator[tuple[LocalFacility, Client, Client]]:
    """The facility's broker (with the driver) and a second replica, each with a client."""
    schema, store = fresh_schema(pg_dsn)
    timing = {"replica_poll_seconds": POLL_SECONDS}
    with LocalFacility(tmp_path / "facility", store=store, timing=timing) as facility:
        facility.start_broker()
        second = EmbeddedBroker(facility.settings())
        try:
            address = second.start().grpc
            alice_b, olivia_b = (
                Client(
                    dataclasses.replace(
                        Profile.load(facility.root / "users" / f"{name}.toml"), broker=address
                    )
                )
                for name in ("alice", "olivia")
            )
            yield facility, alice_b, olivia_b
            alice_b.close()
            olivia_b.close()
        finally:
            second.stop()
    drop_schema(pg_dsn, schema)


def test_a_job_queued_through_one_replica_runs_at_once_through_the_other(
    two_replicas: tuple[LocalFacility, Client, Client],
) -> None:
    facility, alice_b, _ = two_replicas
    facility.start_driver("sim-open")
    facility.wait_available(facility.client("olivia"), "sim-open")
    for _ in range(3):
        job = alice_b.submit(ghz_qasm2(2), device_id="sim-open", shots=10).job
        assert state_name(wait_state(alice_b, job.job_id, "COMPLETED", timeout=20)) == "COMPLETED"


def test_a_device_revoked_through_one_replica_is_cut_off_on_the_other(
    two_replicas: tuple[LocalFacility, Client, Client],
) -> None:
    facility, _, olivia_b = two_replicas
    facility.start_driver("sim-open")
    olivia_a = facility.client("olivia")
    facility.wait_available(olivia_a, "sim-open")
    olivia_b.call(
        olivia_b.admin.RevokeDevice,
        admin_pb2.RevokeDeviceRequest(device_id="sim-open", reason="key leaked"),
    )

    def cut_off() -> bool:
        device = olivia_a.device("sim-open")
        return device.status == "REVOKED" and not device.available

    # The replica holding the driver drops it and dispatches nothing more to the device.
    eventually(cut_off, timeout=10, what="the other replica to see the revocation")
    log = next(facility.root.glob("driver-sim-open-*.log"))
    eventually(lambda: "revoked" in log.read_text(), timeout=10, what="the driver to be told")
