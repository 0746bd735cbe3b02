"""Broker settings refuse what would break the broker's promises, naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.settings import SettingsError, TimingSettings, load_settings

_REQUIRED = """
facility = "facility.toml"
ca_cert = "ca.pem"
client_ca_cert = "clients-ca.pem"
server_cert = "broker.pem"
server_key = "broker.key"
link_secret_key = "link.key_secret"
link_clients = "clients"
"""


def _settings(tmp_path: Path, store: str) -> Path:
    path = tmp_path / "broker.toml"
    path.write_text(f'store = "{store}"\n{_REQUIRED}')
    return path


def test_an_in_memory_store_is_refused_because_it_would_lose_acknowledged_jobs(
    tmp_path: Path,
) -> None:
    with pytest.raises(SettingsError, match="keeps nothing once the broker stops"):
        load_settings(_settings(tmp_path, "memory:"))


def test_a_relative_sqlite_path_is_relative_to_the_settings_file(tmp_path: Path) -> None:
    settings = load_settings(_settings(tmp_path, "sqlite:state/broker.db"))
    assert settings.store == f"sqlite://{tmp_path / 'state' / 'broker.db'}"
    assert settings.facility == tmp_path / "facility.toml"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("hello_burst", 0),
        ("connections_per_key", 0),
        ("nonces_per_connection", 0),
        ("hello_every_seconds", 0.0),
        ("max_leases_per_driver", 0),
        ("max_leases_per_driver", 65),  # past what a connection remembers of its withdrawals
    ],
)
def test_link_limits_cannot_be_switched_off(key: str, value: float) -> None:
    with pytest.raises(SettingsError, match=key):
        TimingSettings(**{key: value})  # type: ignore[arg-type]


def test_the_decoder_pool_is_read_from_its_section_and_its_share_cannot_be_switched_off(
    tmp_path: Path,
) -> None:
    path = _settings(tmp_path, "sqlite:broker.db")
    base = path.read_text()
    path.write_text(base + "[decoding]\nprocesses = 4\nper_principal = 1\n")
    decoding = load_settings(path).decoding
    assert (decoding.pool_size(), decoding.share()) == (4, 1)
    path.write_text(base + "[decoding]\nper_principal = -1\n")
    with pytest.raises(ValueError, match=r"\[decoding\] per_principal"):
        load_settings(path)
    path.write_text(base + "[decoding]\nshare = 100\n")
    with pytest.raises(SettingsError, match=r"\[decoding\] has unknown keys: share"):
        load_settings(path)
