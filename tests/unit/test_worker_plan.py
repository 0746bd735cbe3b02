"""Which addresses each worker process of a broker binds (`broker.workers.plan`), and the
[server] workers setting: validated, and refused on a store only one process may use."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from broker.settings import BrokerSettings, ServerSettings, SettingsError
from broker.workers.plan import pinned, plan_workers

PG = "postgresql://broker@db.example:5432/qtestbed?schema=qtestbed"


def _settings(
    store: str = PG,
    workers: int = 3,
    *,
    listen: str = "127.0.0.1:0",
    link_listen: str = "tcp://127.0.0.1:0",
    metrics_listen: str = "127.0.0.1:0",
    health_listen: str = "",
) -> BrokerSettings:
    files = Path("/facility")
    return BrokerSettings(
        facility=files / "facility.toml",
        store=store,
        ca_cert=files / "ca.pem",
        client_ca_cert=files / "clients-ca.pem",
        server_cert=files / "broker.pem",
        server_key=files / "broker.key",
        link_secret_key=files / "broker.key_secret",
        link_clients=files / "clients",
        server=ServerSettings(workers=workers),
        listen=listen,
        link_listen=link_listen,
        metrics_listen=metrics_listen,
        health_listen=health_listen,
    )


def test_workers_share_grpc_and_health_and_only_worker_0_binds_the_link(tmp_path: Path) -> None:
    settings = _settings(
        listen="0.0.0.0:0",
        link_listen="tcp://0.0.0.0:5555",
        metrics_listen="0.0.0.0:9464",
        health_listen="0.0.0.0:0",
    )
    plans = plan_workers(settings, grpc_port=50051, health_port=8081, folder=tmp_path)
    assert [p.index for p in plans] == [0, 1, 2]
    assert {p.listen for p in plans} == {"0.0.0.0:50051"}
    assert {p.health_listen for p in plans} == {"0.0.0.0:8081"}
    assert [p.link_listen for p in plans] == [
        "tcp://0.0.0.0:5555",
        "inproc://qtestbed-worker-1",
        "inproc://qtestbed-worker-2",
    ]
    assert [p.metrics_listen for p in plans] == ["0.0.0.0:9464", "0.0.0.0:9465", "0.0.0.0:9466"]
    assert len({p.ready_file for p in plans}) == 3


def test_ports_picked_by_the_system_are_kept_across_a_restart(tmp_path: Path) -> None:
    settings = _settings(link_listen="tcp://127.0.0.1:0", metrics_listen="127.0.0.1:0")
    first, second = plan_workers(settings, grpc_port=4000, health_port=0, folder=tmp_path)[:2]
    assert first.metrics_listen == second.metrics_listen == "127.0.0.1:0"
    assert first.health_listen == ""
    report = {"link": "tcp://127.0.0.1:41234", "metrics": "https://127.0.0.1:42345/metrics"}
    again = pinned(first, report)
    assert (again.link_listen, again.metrics_listen) == ("tcp://127.0.0.1:41234", "127.0.0.1:42345")
    assert again.listen == first.listen
    other = pinned(second, {"link": "inproc://x", "metrics": "https://127.0.0.1:40000/metrics"})
    assert other.link_listen == "inproc://qtestbed-worker-1"


def test_more_than_one_worker_needs_postgresql() -> None:
    with pytest.raises(SettingsError, match=r"\[server\] workers = 2 needs a PostgreSQL store"):
        _settings(store="sqlite:///var/lib/qtestbed/broker.db", workers=2)
    assert _settings(store="sqlite:///var/lib/qtestbed/broker.db", workers=1).server.workers == 1


@pytest.mark.parametrize("workers", [0, -1, 65])
def test_a_worker_count_out_of_range_is_refused(workers: int) -> None:
    with pytest.raises(SettingsError, match=r"\[server\] workers must be between 1 and 64"):
        ServerSettings(workers=workers)


def test_the_default_is_one_process() -> None:
    settings = _settings(workers=1)
    assert dataclasses.replace(settings).server == ServerSettings()
