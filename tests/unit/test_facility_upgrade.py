"""`qtestbed facility upgrade`: an old-style facility (root-signed users and devices, no issuing
CAs) gets its issuing CAs, its certificates again from them with the same keys, and the two
settings today's broker needs; the old files are kept; a second run refuses."""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
import tomllib
from pathlib import Path

import pytest
from cryptography import x509

from attestation.clients import verify_client_certificate
from attestation.keys import VerifyKey, load_private_key
from attestation.pki import cert_from_pem, cert_to_pem, create_ca, verify_device_chain
from broker.access.facility import load_facility
from broker.settings import SettingsError, load_settings
from qtestbed.cli.main import main
from qtestbed.facility_init import init_facility
from qtestbed.facility_reissue import with_client_ca, with_facility_id
from qtestbed.facility_upgrade import UpgradeError, upgrade_facility
from qtestbed.shared.identity import principal_uri
from qtestbed.shared.linkkeys import authorised_keys, create_keypair
from tests.old_facility import forget_link_key_devices, make_old_style


def now() -> dt.datetime:
    """The time of the call: the facility is made when the first test runs, after collection."""
    return dt.datetime.now(dt.UTC)


FACILITY_ID = "qtestbed-demo-facility"  # what the broker derived from the facility's name


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("template") / "fac"
    init_facility(root)
    make_old_style(root)
    return root


@pytest.fixture
def old(template: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(template, tmp_path / "fac"))


def digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def public_key_of(path: Path) -> VerifyKey:
    return load_private_key(path).public_key


def test_the_old_style_facility_is_refused_by_todays_broker(old: Path) -> None:
    with pytest.raises(SettingsError, match="qtestbed facility upgrade"):
        load_settings(old / "broker.toml")


def test_users_are_issued_again_from_the_client_ca_with_their_own_keys(old: Path) -> None:
    before = {
        p.name: x509.load_pem_x509_certificate(p.read_bytes()) for p in old.glob("users/*.pem")
    }
    report = upgrade_facility(old, now=now())
    clients = cert_from_pem((old / "ca" / "clients-ca.pem").read_bytes())
    assert sorted(r.name for r in report.principals) == sorted(p[:-4] for p in before)
    for reissued in report.principals:
        path = old / reissued.path
        verified = verify_client_certificate(path.read_bytes(), clients, now=now())
        assert verified.uris == (principal_uri(FACILITY_ID, reissued.name),)
        assert verified.serial == reissued.serial
        new = x509.load_pem_x509_certificate(path.read_bytes())
        assert VerifyKey.from_cryptography(new.public_key()) == public_key_of(
            old / "users" / f"{reissued.name}.key"
        )
        assert new.not_valid_after_utc <= before[path.name].not_valid_after_utc
        assert path.read_bytes().endswith(cert_to_pem(clients))  # leaf, then the issuing CA


def test_devices_are_issued_again_from_the_device_ca_with_their_own_keys(old: Path) -> None:
    old_fingerprints = {p.name: p.read_bytes() for p in old.glob("devices/*.pem")}
    report = upgrade_facility(old, now=now())
    anchor = (old / "ca" / "ca.pem").read_bytes()
    devices_ca = (old / "ca" / "devices-ca.pem").read_bytes()
    for reissued in report.devices:
        chain = (old / reissued.path).read_bytes()
        assert chain != old_fingerprints[Path(reissued.path).name]
        assert chain.endswith(devices_ca)
        verified = verify_device_chain(chain, anchor, now=now(), revoked_serials=frozenset())
        assert verified.device_id == reissued.name
        assert verified.key == public_key_of(old / "devices" / f"{reissued.name}.key")
    # What the operator must register again, as facility.toml lists the devices.
    assert [(r.device_id, r.tier, r.model) for r in report.registrations] == [
        ("sim-open", "open", "qtestbed-sim-aer"),
        ("sim-restricted", "restricted", "qtestbed-sim-aer_noisy"),
    ]


def test_settings_gain_the_client_ca_and_the_facility_id(old: Path) -> None:
    upgrade_facility(old, now=now())
    settings = load_settings(old / "broker.toml")
    assert settings.client_ca_cert == old / "ca" / "clients-ca.pem"
    assert load_facility(old / "facility.toml").facility_id == FACILITY_ID


def test_old_files_are_kept_and_no_private_key_changes(old: Path) -> None:
    before = digests(old)
    report = upgrade_facility(old, now=now())
    kept = {
        str(p.relative_to(report.backup)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in report.backup.rglob("*")
        if p.is_file()
    }
    assert "broker.toml" in kept
    assert "facility.toml" in kept
    assert "users/alice.pem" in kept
    assert "devices/sim-open.pem" in kept
    assert all(before[name] == digest for name, digest in kept.items())
    # Authorised link keys are public keys (they gain the device they are for); no private one.
    public = "link/clients/"
    assert not [name for name in kept if name.endswith(".key") and not name.startswith(public)]
    after = digests(old)
    keys = [
        name
        for name in before
        if name.endswith((".key", ".key_secret"))
        and not name.startswith(public)
        and name != "ca/ca.key"
    ]
    assert all(after[name] == before[name] for name in keys)
    # The CA keys are outside the facility folder, the root key moved there unchanged.
    assert not [name for name in after if name.startswith("ca/") and name.endswith(".key")]
    offline = digests(report.offline_ca)
    assert report.offline_ca == old.parent / "fac-offline-ca"
    assert offline["ca.key"] == before["ca/ca.key"]
    assert {"clients-ca.key", "clients-ca.pem", "devices-ca.key", "ca.pem"} <= set(offline)
    for name in ("ca.key", "clients-ca.key", "devices-ca.key"):
        assert (report.offline_ca / name).stat().st_mode & 0o777 == 0o600
    assert report.offline_ca.stat().st_mode & 0o777 == 0o700


def test_a_second_upgrade_refuses_and_changes_nothing(old: Path) -> None:
    upgrade_facility(old, now=now())
    after = digests(old)
    with pytest.raises(UpgradeError, match="already upgraded"):
        upgrade_facility(old, now=now())
    assert digests(old) == after


def test_each_authorised_link_key_gets_the_one_device_it_is_for(old: Path) -> None:
    clients = old / "link" / "clients"
    assert authorised_keys(clients).devices == {}  # an old key authorises nothing today
    report = upgrade_facility(old, now=now())
    assert sorted(report.link_keys) == [
        ("sim-open-link.key", "sim-open"),
        ("sim-restricted-link.key", "sim-restricted"),
    ]
    keys = authorised_keys(clients)
    assert sorted(keys.devices.values()) == ["sim-open", "sim-restricted"]
    assert keys.unusable == ()
    assert (report.backup / "link" / "clients" / "sim-open-link.key").exists()


def test_a_link_key_no_driver_uses_is_left_and_reported(old: Path) -> None:
    public, _secret = create_keypair(old / "elsewhere", "unknown")
    (old / "link" / "clients" / "unknown.key").write_bytes(public.read_bytes())
    report = upgrade_facility(old, now=now())
    assert any(s.startswith("link/clients/unknown.key: no drivers/*.toml") for s in report.skipped)
    assert "unknown.key" in authorised_keys(old / "link" / "clients").unusable


def test_an_upgraded_facility_whose_link_keys_name_no_device_gets_only_that(
    old: Path,
) -> None:
    upgrade_facility(old, now=now())
    forget_link_key_devices(old)  # upgraded before link keys named their device
    settings = digests(old)
    report = upgrade_facility(old, now=now() + dt.timedelta(seconds=1))
    assert report.link_keys_only
    assert len(report.link_keys) == 2
    changed = {k for k, v in digests(old).items() if settings.get(k) != v}
    assert {k for k in changed if not k.startswith("pre-upgrade-")} == {
        "link/clients/sim-open-link.key",
        "link/clients/sim-restricted-link.key",
    }
    with pytest.raises(UpgradeError, match="already upgraded"):
        upgrade_facility(old, now=now() + dt.timedelta(seconds=2))


def test_an_interrupted_upgrade_is_named(old: Path) -> None:
    shutil.copy(old / "ca" / "ca.pem", old / "ca" / "clients-ca.pem")
    with pytest.raises(UpgradeError, match="stopped part-way"):
        upgrade_facility(old, now=now())


def test_the_facility_id_can_be_chosen_but_not_changed(old: Path) -> None:
    report = upgrade_facility(old, facility_id="lab-7", now=now())
    assert report.facility_id == "lab-7"
    assert load_facility(old / "facility.toml").facility_id == "lab-7"


def test_a_facility_id_other_than_the_files_is_refused(old: Path) -> None:
    text = (old / "facility.toml").read_text().replace("[facility]\n", '[facility]\nid = "x"\n')
    (old / "facility.toml").write_text(text)
    with pytest.raises(UpgradeError, match="already names the facility 'x'"):
        upgrade_facility(old, facility_id="y", now=now())


def test_a_root_key_others_can_read_is_refused(old: Path) -> None:
    (old / "ca" / "ca.key").chmod(0o644)
    before = digests(old)
    with pytest.raises(UpgradeError, match="chmod 600"):
        upgrade_facility(old, now=now())
    assert digests(old) == before


def test_a_folder_that_is_no_facility_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UpgradeError, match="made by 'qtestbed init'"):
        upgrade_facility(tmp_path, now=now())


def test_certificates_the_root_did_not_sign_are_left_alone(old: Path) -> None:
    stranger_key = load_private_key(old / "users" / "alice.key")
    other = create_ca("someone else", stranger_key, now=now(), days=30)
    (old / "users" / "stranger.pem").write_bytes(cert_to_pem(other))
    report = upgrade_facility(old, now=now())
    assert any(
        s.startswith("users/stranger.pem: not a certificate the facility root")
        for s in report.skipped
    )
    assert (old / "users" / "stranger.pem").read_bytes() == cert_to_pem(other)


def test_the_command_says_what_to_do_next_and_refuses_a_second_time(
    old: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["facility", "upgrade", str(old)]) == 0
    out = capsys.readouterr().out
    assert f"facility id {FACILITY_ID}" in out
    assert f"qtestbed device register {old}/devices/sim-open.pem --tier open" in out
    assert f"Take {old}-offline-ca off the broker's machine now" in out
    assert main(["facility", "upgrade", str(old)]) == 2
    assert "facility not upgraded" in capsys.readouterr().err


def test_an_upgraded_facility_with_ca_keys_in_its_folder_has_them_moved_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A facility made by `init` with its issuing CAs but before the CA keys were kept apart:
    the keys were in ca/. The command moves them out (0600 kept) and says where."""
    root = tmp_path / "fac"
    init_facility(root, offline_ca=tmp_path / "was-offline")
    for key in (tmp_path / "was-offline").glob("*.key"):
        key.rename(root / "ca" / key.name)
    before = {p.name: p.read_bytes() for p in (root / "ca").glob("*.key")}
    assert main(["facility", "upgrade", str(root), "--offline-ca", str(tmp_path / "keys")]) == 0
    out = capsys.readouterr().out
    assert "upgraded already; moved its CA keys out" in out
    assert f"Take {tmp_path / 'keys'} off the broker's machine now" in out
    assert not list((root / "ca").glob("*.key"))
    for name, data in before.items():
        assert (tmp_path / "keys" / name).read_bytes() == data
        assert (tmp_path / "keys" / name).stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "keys" / "clients-ca.pem").exists()  # beside its key, for issuing
    assert main(["facility", "upgrade", str(root)]) == 2  # nothing left to do
    assert "already upgraded" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text",
    [
        'store = "sqlite:x.db"',  # no table, no final newline
        'store = "sqlite:x.db"\n[limits]\nmax_qubits = 3\n',
        'ca_cert = "ca/ca.pem"\nstore = "s"\n\n[timing]\nlease_seconds = 1.0\n',
    ],
)
def test_client_ca_is_added_as_a_top_level_setting(text: str) -> None:
    doc = tomllib.loads(with_client_ca(text, "ca/clients-ca.pem"))
    assert doc["client_ca_cert"] == "ca/clients-ca.pem"
    assert {k: v for k, v in doc.items() if k != "client_ca_cert"} == tomllib.loads(text)


def test_the_facility_id_goes_into_the_facility_table() -> None:
    text = '[[principals]]\nname = "a"\n[facility]  # the facility\nname = "Lab"\n'
    doc = tomllib.loads(with_facility_id(text, "lab"))
    assert doc["facility"] == {"name": "Lab", "id": "lab"}
    with pytest.raises(UpgradeError, match="no \\[facility\\] table"):
        with_facility_id('[[principals]]\nname = "a"\n', "lab")
