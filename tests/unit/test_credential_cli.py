"""`qtestbed credential request | issue | renew` without a broker: the files they write, what
they refuse, and their exit codes (the broker side runs in tests/e2e/test_onboarding.py)."""

from __future__ import annotations

import datetime as dt
import json
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from attestation.clients import verify_client_certificate
from attestation.issuance import create_csr
from attestation.keys import KeyKind, SigningKey, VerifyKey, load_private_key, save_private_key
from attestation.pki import cert_to_pem, create_ca, create_intermediate, serial_hex
from qtestbed.cli.main import main
from qtestbed.client import Profile

NOW = dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Facility:
    ca_dir: Path  # the operator's offline folder: clients-ca.key and clients-ca.pem
    root_pem: Path
    clients: x509.Certificate


@pytest.fixture(scope="module")
def facility(tmp_path_factory: pytest.TempPathFactory) -> Facility:
    base = tmp_path_factory.mktemp("ca")
    root_key = SigningKey.generate(KeyKind.ECDSA_P256)
    root = create_ca("root", root_key, now=NOW, days=3650, path_length=1)
    key = SigningKey.generate(KeyKind.ECDSA_P256)
    clients = create_intermediate(
        "clients",
        key,
        parent_key=root_key,
        parent_cert=root,
        now=NOW - dt.timedelta(hours=1),
        days=3650,
        extended_key_usage=[ExtendedKeyUsageOID.CLIENT_AUTH],
    )
    save_private_key(key, base / "clients-ca.key")
    (base / "clients-ca.pem").write_bytes(cert_to_pem(clients))
    (base / "ca.pem").write_bytes(cert_to_pem(root))
    return Facility(ca_dir=base, root_pem=base / "ca.pem", clients=clients)


def request(facility: Facility, out: Path, name: str = "carol") -> int:
    return main(
        [
            "credential",
            "request",
            name,
            "--facility-id",
            "demo",
            "--out",
            str(out),
            "--broker",
            "broker.example:50051",
            "--ca-cert",
            str(facility.root_pem),
        ]
    )


def issue(
    facility: Facility,
    csr: Path,
    out: Path,
    *extra: str,
    source: tuple[str, str] = ("--facility-id", "demo"),
) -> int:
    return main(
        [
            "credential",
            "issue",
            str(csr),
            "--name",
            "carol",
            "--ca-dir",
            str(facility.ca_dir),
            "--out",
            str(out),
            *source,
            *extra,
        ]
    )


def test_request_makes_an_owner_only_key_a_csr_and_a_ready_profile(
    facility: Facility, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "carol"
    assert request(facility, out) == 0
    printed = capsys.readouterr().out
    assert "send this file, and only this one" in printed
    assert str(out / "carol.csr") in printed
    assert stat.S_IMODE((out / "carol.key").stat().st_mode) == 0o600
    key = load_private_key(out / "carol.key")
    csr = x509.load_pem_x509_csr((out / "carol.csr").read_bytes())
    assert csr.is_signature_valid
    assert VerifyKey.from_cryptography(csr.public_key()) == key.public_key
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "qtestbed://demo/principal/carol"
    ]
    assert b"PRIVATE" not in (out / "carol.csr").read_bytes()
    profile = Profile.load(out / "carol.toml")
    assert profile.broker == "broker.example:50051"
    assert (profile.key, profile.cert) == ((out / "carol.key"), (out / "carol.pem"))
    assert profile.ca_cert.read_bytes() == facility.root_pem.read_bytes()


def test_request_never_replaces_a_key(
    facility: Facility, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert request(facility, tmp_path) == 0
    key = (tmp_path / "carol.key").read_bytes()
    capsys.readouterr()
    assert request(facility, tmp_path) == 2
    assert "exists; a request never replaces a key" in capsys.readouterr().err
    assert (tmp_path / "carol.key").read_bytes() == key


def test_request_refuses_a_bad_facility_id(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["credential", "request", "carol", "--facility-id", "Bad Id", "--out", str(tmp_path)])
    assert exited.value.code == 2
    assert not any(tmp_path.iterdir())


def test_issue_writes_a_client_certificate_then_the_issuing_ca(
    facility: Facility, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert request(facility, tmp_path) == 0
    capsys.readouterr()
    out = tmp_path / "carol.pem"
    assert issue(facility, tmp_path / "carol.csr", out, "--days", "7", "--json") == 0
    body = json.loads(capsys.readouterr().out)
    pems = out.read_bytes().split(b"-----END CERTIFICATE-----\n")
    leaf = pems[0] + b"-----END CERTIFICATE-----\n"
    assert x509.load_pem_x509_certificate(pems[1] + b"-----END CERTIFICATE-----\n") == (
        facility.clients
    )
    verified = verify_client_certificate(leaf, facility.clients, now=dt.datetime.now(dt.UTC))
    assert verified.uris == ("qtestbed://demo/principal/carol",)
    assert body["serial"] == verified.serial
    assert body["recorded"] is None
    cert = x509.load_pem_x509_certificate(leaf)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(days=7)
    # The profile `request` wrote now names a usable key and certificate pair.
    key = load_private_key(tmp_path / "carol.key")
    assert VerifyKey.from_cryptography(cert.public_key()) == key.public_key


@pytest.mark.parametrize(
    ("toml", "uri"),
    [
        ('[facility]\nname = "Lab"\nid = "lab-7"\n', "qtestbed://lab-7/principal/carol"),
        ('[facility]\nname = "Quantum Lab"\n', "qtestbed://quantum-lab/principal/carol"),
    ],
)
def test_issue_reads_the_facility_id_as_the_broker_does(
    facility: Facility, tmp_path: Path, capsys: pytest.CaptureFixture[str], toml: str, uri: str
) -> None:
    key = SigningKey.generate(KeyKind.ECDSA_P256)
    csr, out = tmp_path / "carol.csr", tmp_path / "carol.pem"
    csr.write_bytes(create_csr(key, uri))
    (tmp_path / "facility.toml").write_text(toml)
    assert issue(facility, csr, out, source=("--facility", str(tmp_path / "missing.toml"))) == 2
    assert "cannot read the facility id" in capsys.readouterr().err
    assert issue(facility, csr, out, source=("--facility", str(tmp_path / "facility.toml"))) == 0
    assert json.dumps(uri)[1:-1] in capsys.readouterr().out


def test_issue_refuses_a_csr_for_someone_else_and_writes_nothing(
    facility: Facility, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert request(facility, tmp_path / "mallory", name="mallory") == 0
    capsys.readouterr()
    out = tmp_path / "carol.pem"
    assert issue(facility, tmp_path / "mallory" / "mallory.csr", out) == 2
    err = capsys.readouterr().err
    assert "asks for qtestbed://demo/principal/mallory, not qtestbed://demo/principal/carol" in err
    assert not out.exists()


def test_issue_refuses_a_ca_key_others_can_read(
    facility: Facility, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert request(facility, tmp_path) == 0
    capsys.readouterr()
    key = facility.ca_dir / "clients-ca.key"
    key.chmod(0o640)
    try:
        assert issue(facility, tmp_path / "carol.csr", tmp_path / "carol.pem") == 2
    finally:
        key.chmod(0o600)
    assert f"run `chmod 600 {key}`" in capsys.readouterr().err
    assert not (tmp_path / "carol.pem").exists()


@pytest.mark.parametrize("days", ["0", "366", "x"])
def test_issue_bounds_the_lifetime(facility: Facility, tmp_path: Path, days: str) -> None:
    with pytest.raises(SystemExit) as exited:
        issue(facility, tmp_path / "carol.csr", tmp_path / "carol.pem", "--days", days)
    assert exited.value.code == 2


def test_record_needs_a_profile_and_writes_nothing_without_one(
    facility: Facility,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("QTESTBED_PROFILE", raising=False)
    assert request(facility, tmp_path) == 0
    capsys.readouterr()
    out = tmp_path / "carol.pem"
    assert issue(facility, tmp_path / "carol.csr", out, "--record") == 2
    assert "no client profile" in capsys.readouterr().err
    assert not out.exists()


def test_renew_keeps_key_and_principal_with_a_new_serial(
    facility: Facility, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert request(facility, tmp_path) == 0
    assert issue(facility, tmp_path / "carol.csr", tmp_path / "carol.pem") == 0
    capsys.readouterr()
    renewed = tmp_path / "carol-renewed.pem"
    argv = ["credential", "renew", str(tmp_path / "carol.pem"), "--ca-dir", str(facility.ca_dir)]
    assert main([*argv, "--out", str(renewed), "--days", "60"]) == 0
    captured = capsys.readouterr()
    assert "not checked against revocations" in captured.err
    old = x509.load_pem_x509_certificate((tmp_path / "carol.pem").read_bytes())
    new = x509.load_pem_x509_certificate(renewed.read_bytes())
    assert serial_hex(new) != serial_hex(old)
    assert serial_hex(new) in captured.out
    assert new.public_key() == old.public_key()
    assert new.extensions.get_extension_for_class(x509.SubjectAlternativeName) == (
        old.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    )
    assert new.not_valid_after_utc - new.not_valid_before_utc == dt.timedelta(days=60)
