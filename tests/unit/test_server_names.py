"""`qtestbed init --broker-name`: the broker's certificate names what clients and drivers reach
it by (a Kubernetes Service, a host), besides localhost and 127.0.0.1; a name that is neither a
DNS name nor an IP address is refused before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from qtestbed.cli.main import main
from qtestbed.server_names import split_names


def test_names_split_into_dns_names_and_addresses_once_each() -> None:
    dns, ips = split_names(["localhost", "127.0.0.1", "Broker.Example.org", "::1", "localhost"])
    assert dns == ["localhost", "broker.example.org"]
    assert ips == ["127.0.0.1", "::1"]


@pytest.mark.parametrize("bad", ["", "broker_1.example", "-broker", "a..b", "*.example.org"])
def test_a_name_that_is_neither_is_refused_saying_so(bad: str) -> None:
    with pytest.raises(ValueError, match="neither a DNS name"):
        split_names([bad])


def test_init_names_the_broker_by_each_given_name(tmp_path: Path) -> None:
    root = tmp_path / "fac"
    service = "qtestbed-broker.qtestbed.svc"
    code = main(["init", str(root), "--broker-name", service, "--broker-name", "10.0.0.7"])
    assert code == 0
    cert = x509.load_pem_x509_certificate((root / "broker" / "broker.pem").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost", service]
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == [
        "127.0.0.1",
        "10.0.0.7",
    ]


def test_init_refuses_a_bad_name_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "fac"
    assert main(["init", str(root), "--broker-name", "broker_1"]) != 0
    assert "broker name 'broker_1' is neither a DNS name" in capsys.readouterr().err
    assert not root.exists()
