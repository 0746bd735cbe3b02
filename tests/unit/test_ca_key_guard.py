"""Which files the broker's CA-key check counts as a CA key, and where it looks (the check
itself, on a real `qtestbed broker`, is in tests/e2e/test_broker_files.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.ca_keys import CaKeyOnBroker, readable_ca_keys, refuse_readable_ca_keys
from broker.settings import BrokerSettings, load_settings
from qtestbed.facility_init import init_facility


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> BrokerSettings:
    root = tmp_path_factory.mktemp("guard") / "fac"
    init_facility(root)
    return load_settings(root / "broker.toml")


@pytest.fixture
def root(settings: BrokerSettings) -> Path:
    return settings.facility.parent


def test_a_new_facility_passes(settings: BrokerSettings) -> None:
    refuse_readable_ca_keys(settings)  # init put the CA keys outside


@pytest.mark.parametrize(
    "placed",
    [
        "ca/ca.key",
        "ca/clients-ca.key",
        "ca/devices-ca.key",
        "link/clients/vendor_ca.key",
        "ca.key",
        "old/intermediate.ca.key",  # one level below the facility folder
    ],
)
def test_ca_keys_by_name_where_the_broker_looks(
    settings: BrokerSettings, root: Path, placed: str
) -> None:
    path = root / placed
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"whatever: the check never reads it")
    try:
        with pytest.raises(CaKeyOnBroker, match="CA private key readable by the broker"):
            refuse_readable_ca_keys(settings)
        assert readable_ca_keys(settings) == {path}
    finally:
        path.unlink()


@pytest.mark.parametrize(
    "placed",
    [
        "users/carol.key",  # a principal's key: not a CA's
        "devices/cascade.key",
        "a/b/c/ca.key",  # deeper than one level below a configured folder
        "ca/ca.key.bak",
    ],
)
def test_other_files_are_not_ca_keys(settings: BrokerSettings, root: Path, placed: str) -> None:
    path = root / placed
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    try:
        refuse_readable_ca_keys(settings)
    finally:
        path.unlink()
