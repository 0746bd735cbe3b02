"""`qtestbed facility upgrade DIR`: a facility made before the issuing CAs, brought up to date.

Before, `qtestbed init` had the root sign users' and devices' certificates directly, the broker
knew a principal by its certificate's common name, broker.toml had no `client_ca_cert` and
facility.toml no `[facility] id`; today's broker refuses to start on such a facility. Run where
the root key is (ca/ca.key), with the broker stopped, the upgrade
- creates the client-issuing CA (clientAuth) and the device-issuing CA with the root key;
- issues each user certificate under users/ again from the client-issuing CA (same key, the
  principal named in the URI), and each device certificate under devices/ from the device-issuing
  CA (same key and device URI); none lasts beyond the one it replaces;
- adds `client_ca_cert` to broker.toml and the facility id to facility.toml;
- names in each authorised driver link key (link/clients) the one device it may speak for
  (`qtestbed.facility_link_keys`),
after copying every file it changes into DIR/pre-upgrade-TIME/ (no private key changes). The
new issuing CAs' keys are written to the offline CA folder (`DIR-offline-ca` unless told), never
into DIR, and the root key is moved there from DIR/ca/: the broker refuses to start where it
can read a CA key. On a facility already upgraded it only names the devices of link keys that
name none (moving any CA key still in DIR/ca/ out as well), or refuses, saying so
(`AlreadyUpgraded`), when that is done; `qtestbed facility upgrade` then moves any CA key still
in DIR/ca/ out.

The broker's registry knows each device by its certificate's fingerprint, which the new
certificate changes. The upgrade does not write to the broker's store behind its back: once the
broker runs again, an operator registers each new certificate (`qtestbed device register`,
checked against the root and the revocation list, audited, the device's status kept) before
restarting the drivers. The report lists those commands.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attestation.keys import KeyFileError, VerifyKey, create_private_key_file, load_private_key
from attestation.pki import CertificateError, cert_from_pem, cert_to_pem
from attestation.secretfile import private_folder
from qtestbed import facility_reissue as reissue
from qtestbed.credential_files import CredentialFileError, write_public_file
from qtestbed.facility_link_keys import LinkKeyPlan, apply_link_keys, plan_link_keys
from qtestbed.facility_reissue import Ca, Reissued, UpgradeError
from qtestbed.offline_ca import CA_NAMES as _CA_NAMES
from qtestbed.offline_ca import check_outside, default_offline_ca, move_ca_keys_out
from qtestbed.shared.identity import check_facility_id, facility_id_from_name

__all__ = [
    "AlreadyUpgraded",
    "DeviceRegistration",
    "UpgradeError",
    "UpgradeReport",
    "upgrade_facility",
]

_NEW_CA_FILES = ("ca/clients-ca.pem", "ca/clients-ca.key", "ca/devices-ca.pem", "ca/devices-ca.key")
_BACKDATE = dt.timedelta(minutes=5)


class AlreadyUpgraded(UpgradeError):
    """The facility has its issuing CAs already; nothing of the upgrade itself is left to do."""


@dataclass(frozen=True, kw_only=True, slots=True)
class DeviceRegistration:
    """A device whose new certificate the broker must be told about, as facility.toml lists it."""

    device_id: str
    tier: str
    model: str
    certificate: Path


@dataclass(frozen=True, kw_only=True, slots=True)
class UpgradeReport:
    root: Path
    facility_id: str
    backup: Path
    offline_ca: Path  # where the CA keys are now (and copies of their certificates)
    principals: tuple[Reissued, ...]
    devices: tuple[Reissued, ...]
    skipped: tuple[str, ...]  # files left as they were, each with why
    registrations: tuple[DeviceRegistration, ...]
    # Authorised link keys that now name their device: (file under link/clients, device id).
    link_keys: tuple[tuple[str, str], ...] = ()
    # Only the link keys were upgraded (the rest had been, by an earlier upgrade).
    link_keys_only: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class _Settings:
    broker: Path
    broker_text: str
    facility: Path
    facility_text: str
    facility_doc: dict[str, Any]


def upgrade_facility(
    root: Path,
    *,
    facility_id: str | None = None,
    now: dt.datetime | None = None,
    offline_ca: Path | None = None,
) -> UpgradeReport:
    """Upgrade the facility in `root` (see the module's docstring), or UpgradeError saying why
    not, before anything was written."""
    keys = plan_link_keys(root)
    if _already_upgraded(root) and keys.authorise:
        offline = offline_ca or default_offline_ca(root)
        return _upgrade_link_keys(root, keys, now or dt.datetime.now(dt.UTC), offline)
    settings = _inspect(root)
    offline = offline_ca or default_offline_ca(root)
    _check_offline(root, offline)
    fid = _facility_id(settings.facility_doc, facility_id)
    now = now or dt.datetime.now(dt.UTC)
    start = now - _BACKDATE
    root_ca = _root_ca(root)
    clients = reissue.client_ca(root_ca, fid, start)
    devices = reissue.device_ca(root_ca, fid, start)
    users, skipped = reissue.reissue_folder(
        root / "users", root_ca, clients, reissue.user_issuer(clients, fid, now), now
    )
    devs, skipped_devices = reissue.reissue_folder(
        root / "devices", root_ca, devices, reissue.device_issuer(devices, start), now
    )
    texts = _settings_texts(settings, root, fid)
    key_files = [path for path, _ in keys.authorise]
    backup = _backup(root, [settings.broker, settings.facility, *key_files], [*users, *devs], now)
    _write_cas(root, offline, clients, devices)
    for done in (*users, *devs):
        _write(root / done.path, done.pem)
    apply_link_keys(keys)
    for path, text in texts:  # broker.toml last: it marks the facility as upgraded
        _write(path, text.encode())
    move_ca_keys_out(root, offline)
    return UpgradeReport(
        root=root,
        facility_id=fid,
        backup=backup,
        offline_ca=offline,
        principals=tuple(users),
        devices=tuple(devs),
        skipped=tuple(skipped + skipped_devices + list(keys.skipped)),
        registrations=_registrations(settings, root, devs),
        link_keys=tuple((path.name, device) for path, device in keys.authorise),
    )


def _already_upgraded(root: Path) -> bool:
    broker = root / "broker.toml"
    return broker.exists() and "client_ca_cert" in _toml(broker)


def _upgrade_link_keys(
    root: Path, keys: LinkKeyPlan, now: dt.datetime, offline: Path
) -> UpgradeReport:
    """A facility upgraded before link keys named their device: that step, and CA keys still in
    DIR/ca/ moved out to the offline folder (the broker refuses to start beside them)."""
    facility = _toml(root / "facility.toml")
    backup = _backup(root, [path for path, _ in keys.authorise], [], now)
    apply_link_keys(keys)
    try:
        move_ca_keys_out(root, offline)
    except (FileExistsError, ValueError) as exc:
        raise UpgradeError(str(exc)) from exc
    return UpgradeReport(
        root=root,
        facility_id=str(facility.get("facility", {}).get("id", "")),
        backup=backup,
        principals=(),
        devices=(),
        skipped=keys.skipped,
        registrations=(),
        offline_ca=offline,
        link_keys=tuple((path.name, device) for path, device in keys.authorise),
        link_keys_only=True,
    )


def _inspect(root: Path) -> _Settings:
    _require(root, "broker.toml")
    broker = root / "broker.toml"
    broker_doc = _toml(broker)
    if "client_ca_cert" in broker_doc:
        raise AlreadyUpgraded(
            f"{root} is already upgraded: {broker} names client_ca_cert "
            f"({broker_doc['client_ca_cert']}); nothing to do"
        )
    _require(root, "ca/ca.pem")
    _require(root, "ca/ca.key")
    leftovers = [name for name in _NEW_CA_FILES if (root / name).exists()]
    if leftovers:
        raise UpgradeError(
            f"{', '.join(leftovers)} exist in {root} but broker.toml names no client_ca_cert: "
            "an upgrade stopped part-way. Copy back the files of the newest "
            f"{root}/pre-upgrade-*/ folder, remove those files, and run the upgrade again"
        )
    facility = broker.parent / str(broker_doc.get("facility", "facility.toml"))
    return _Settings(
        broker=broker,
        broker_text=broker.read_text(),
        facility=facility,
        facility_text=facility.read_text(),
        facility_doc=_toml(facility),
    )


def _require(root: Path, needed: str) -> None:
    if not (root / needed).exists():
        raise UpgradeError(
            f"{root / needed} does not exist: is {root} a facility folder made by "
            "'qtestbed init' (run the upgrade where the root key is)?"
        )


def _toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UpgradeError(f"cannot read {path}: {exc}") from exc


def _facility_id(doc: dict[str, Any], given: str | None) -> str:
    info = doc.get("facility", {})
    current = info.get("id")
    if current is not None and given is not None and given != current:
        raise UpgradeError(
            f"facility.toml already names the facility {current!r}; drop --facility-id or "
            "give that one"
        )
    name = str(info.get("name", "qtestbed facility"))
    try:  # what the broker derived from the name so far, unless told otherwise
        return check_facility_id(str(current or given or facility_id_from_name(name)))
    except ValueError as exc:
        raise UpgradeError(str(exc)) from exc


def _root_ca(root: Path) -> Ca:
    try:
        key = load_private_key(root / "ca" / "ca.key")
        cert = cert_from_pem((root / "ca" / "ca.pem").read_bytes())
    except (KeyFileError, OSError, CertificateError) as exc:
        raise UpgradeError(f"cannot use the facility root: {exc}") from exc
    if VerifyKey.from_cryptography(cert.public_key()) != key.public_key:
        raise UpgradeError(f"{root}/ca/ca.key is not the key of {root}/ca/ca.pem")
    return Ca(key=key, cert=cert)


def _settings_texts(settings: _Settings, root: Path, fid: str) -> list[tuple[Path, str]]:
    texts = []
    if "id" not in settings.facility_doc.get("facility", {}):
        texts.append((settings.facility, reissue.with_facility_id(settings.facility_text, fid)))
    relative = os.path.relpath(root / "ca" / "clients-ca.pem", settings.broker.parent)
    texts.append((settings.broker, reissue.with_client_ca(settings.broker_text, relative)))
    return texts


def _backup(root: Path, files: list[Path], changed: list[Reissued], now: dt.datetime) -> Path:
    backup = root / f"pre-upgrade-{now.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}"
    try:
        backup.mkdir()
        for path in (*files, *(root / c.path for c in changed)):
            target = backup / path.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    except (OSError, ValueError) as exc:
        raise UpgradeError(f"cannot keep copies of the old files in {backup}: {exc}") from exc
    return backup


def _check_offline(root: Path, offline: Path) -> None:
    try:
        check_outside(root, offline)
    except ValueError as exc:
        raise UpgradeError(str(exc)) from exc
    there = [str(offline / f"{n}.key") for n in _CA_NAMES if (offline / f"{n}.key").exists()]
    if there:
        raise UpgradeError(
            f"{', '.join(there)} exist already; choose another --offline-ca folder for this "
            "facility's CA keys"
        )


def _write_cas(root: Path, offline: Path, clients: Ca, devices: Ca) -> None:
    """Each issuing CA's certificate in DIR/ca/; its key (with a copy of the certificate) in
    the offline folder only."""
    private_folder(offline)
    for name, ca in (("clients-ca", clients), ("devices-ca", devices)):
        create_private_key_file(ca.key, offline / f"{name}.key")
        _write(offline / f"{name}.pem", cert_to_pem(ca.cert))
        _write(root / "ca" / f"{name}.pem", cert_to_pem(ca.cert))


def _write(path: Path, data: bytes) -> None:
    try:
        write_public_file(path, data)
    except CredentialFileError as exc:
        raise UpgradeError(str(exc)) from exc


def _registrations(
    settings: _Settings, root: Path, devices: list[Reissued]
) -> tuple[DeviceRegistration, ...]:
    changed = {(root / d.path).resolve() for d in devices}
    found = []
    for entry in settings.facility_doc.get("devices", ()):
        certificate = settings.facility.parent / str(entry.get("certificate", ""))
        if certificate.resolve() in changed:
            found.append(
                DeviceRegistration(
                    device_id=str(entry["device_id"]),
                    tier=str(entry.get("tier", "")),
                    model=str(entry.get("model", "")),
                    certificate=certificate,
                )
            )
    return tuple(found)
