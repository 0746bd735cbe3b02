"""An operator re-registers a restricted device at the open tier over real gRPC: the broker
refuses (PERMISSION_DENIED, rule access.device-lowering, naming the device grant to ask for),
counts and audits it, and the device stays hidden from an open-tier researcher."""

from __future__ import annotations

import pytest

from qtestbed.client import QtestbedError
from qtestbed.testing import LocalFacility
from qtestbed.v1 import admin_pb2
from tests.integration.support import audit_entries, metric_value, scrape


def test_re_registering_a_device_cannot_lower_its_tier(facility: LocalFacility) -> None:
    facility.start_broker()
    olivia, alice = facility.client("olivia"), facility.client("alice")
    assert "sim-restricted" not in {d.device_id for d in alice.devices()}
    chain = (facility.root / "devices" / "sim-restricted.pem").read_bytes()
    lower = admin_pb2.RegisterDeviceRequest(
        certificate_chain_pem=chain, tier="open", model="sim-restricted"
    )
    with pytest.raises(QtestbedError) as refused:
        olivia.call(olivia.admin.RegisterDevice, lower)
    assert refused.value.code == "PERMISSION_DENIED"
    assert refused.value.rule_id == "access.device-lowering"
    assert "qtestbed access request --device sim-restricted" in refused.value.message
    assert "sim-restricted" not in {d.device_id for d in alice.devices()}
    listed = olivia.call(
        olivia.admin.ListRegisteredDevices, admin_pb2.ListRegisteredDevicesRequest()
    )
    assert {d.device_id: d.tier for d in listed.devices}["sim-restricted"] == "restricted"
    text = scrape(facility)
    assert metric_value(text, "qtestbed_access_refusals_total", rule="access.device-lowering") == 1
    [audited] = audit_entries(facility, kind="access.device.refused")
    assert audited.subject == "sim-restricted"
