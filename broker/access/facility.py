"""The facility file: tiers, the CA, where the devices are, and the seeds of the registries.

Principals, projects and devices listed here seed the store-backed registries on first start
(and on SIGHUP, for entries not yet in the store); from then on operators manage them through
the access API, which versions and audits every change.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attestation.calibration import CalibrationWindows
from broker.access.documents import principal_from_doc, project_from_doc
from broker.access.model import AccessError, Principal, Project
from broker.devices.model import ReferenceScope
from broker.devices.registry import ReferenceInput, SeedDevice
from qtestbed.shared.identity import check_facility_id, facility_id_from_name


class FacilityError(ValueError):
    """The facility file is wrong; the message names the entry and the problem."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Facility:
    """An immutable snapshot of the registry; a reload swaps in a new one."""

    name: str
    tiers: tuple[str, ...]
    # Seeds for the access registry: the store holds the live records (broker.access.registry).
    principals: Mapping[str, Principal]
    projects: tuple[Project, ...]
    seed_devices: tuple[SeedDevice, ...]
    ca_pem: bytes
    # Where the facility's devices are, for export rules; whether remote access counts as an
    # export is a legal judgement the facility records here (true is the strict reading).
    jurisdiction: str = ""
    remote_access_is_export: bool = True
    export_licence: str = "EAR-4A906"
    # Names the facility in its principals' certificates (qtestbed://ID/principal/NAME).
    facility_id: str = "facility"

    def tier_rank(self, tier: str) -> int:
        return self.tiers.index(tier)


def load_facility(path: Path) -> Facility:
    """Parse and check the facility file; refuses anything inconsistent instead of guessing."""
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise FacilityError(f"cannot read facility file {path}: {exc}") from exc
    base = path.resolve().parent
    info = raw.get("facility", {})
    tiers = tuple(str(t) for t in info.get("tiers", ()))
    if not tiers or len(set(tiers)) != len(tiers):
        raise FacilityError(f"{path}: [facility] tiers must be a non-empty list of unique names")
    ca_pem = _read(base, info, "ca_cert", "facility")
    principals = {p.name: p for p in (_principal(e, tiers) for e in raw.get("principals", ()))}
    seeds = tuple(_device(e, tiers, base) for e in raw.get("devices", ()))
    name = str(info.get("name", "qtestbed facility"))
    try:
        facility_id = check_facility_id(str(info.get("id", facility_id_from_name(name))))
    except ValueError as exc:
        raise FacilityError(f"{path}: [facility] {exc}") from exc
    return Facility(
        name=name,
        facility_id=facility_id,
        tiers=tiers,
        principals=principals,
        projects=tuple(_project(e) for e in raw.get("projects", ())),
        seed_devices=seeds,
        ca_pem=ca_pem,
        jurisdiction=str(info.get("jurisdiction", "")),
        remote_access_is_export=bool(info.get("remote_access_is_export", True)),
        export_licence=str(info.get("export_licence", "EAR-4A906")),
    )


def _read(base: Path, table: Mapping[str, Any], key: str, where: str) -> bytes:
    if key not in table:
        raise FacilityError(f"{where}: missing {key!r}")
    path = Path(str(table[key]))
    try:
        return (path if path.is_absolute() else base / path).read_bytes()
    except OSError as exc:
        raise FacilityError(f"{where}: cannot read {key} {path}: {exc}") from exc


def _check_tier(tier: str, tiers: Sequence[str], where: str) -> str:
    if tier not in tiers:
        raise FacilityError(f"{where}: tier {tier!r} is not one of {', '.join(tiers)}")
    return tier


def _principal(entry: Mapping[str, Any], tiers: Sequence[str]) -> Principal:
    """A [[principals]] entry: its TOML form is the stored JSON document with date-times for
    times and `researcher` as the default role, so it is read by the same code."""
    name = str(entry.get("name", ""))
    if not name:
        raise FacilityError("a [[principals]] entry has no name")
    where = f"principal {name!r}"
    doc = {key: value for key, value in entry.items() if key != "name"}
    doc.setdefault("roles", ["researcher"])
    expires = doc.get("clearance_expires_at")
    if expires is not None:
        doc["clearance_expires_at"] = _when(expires, where, "clearance")
    training = doc.get("training", {})
    if not isinstance(training, Mapping):
        raise FacilityError(f"{where}: training must be a table of course = expiry date-time")
    doc["training"] = {str(k): _when(v, where, f"training {k}") for k, v in training.items()}
    try:
        return principal_from_doc(name, doc).check_tier(tiers)
    except AccessError as exc:
        raise FacilityError(str(exc)) from exc


def _project(entry: Mapping[str, Any]) -> Project:
    name = str(entry.get("name", ""))
    if not name:
        raise FacilityError("a [[projects]] entry has no name")
    try:
        return project_from_doc(name, {k: v for k, v in entry.items() if k != "name"})
    except AccessError as exc:
        raise FacilityError(str(exc)) from exc


def _when(value: object, where: str, what: str) -> float:
    if not isinstance(value, dt.datetime) or value.tzinfo is None:
        raise FacilityError(f"{where}: {what} must be a TOML date-time with a time zone")
    return value.timestamp()


def _device(entry: Mapping[str, Any], tiers: Sequence[str], base: Path) -> SeedDevice:
    device_id = str(entry.get("device_id", ""))
    where = f"device {device_id!r}"
    ref = entry.get("reference", {})
    try:
        reference = ReferenceInput(
            scope=ReferenceScope.DEVICE,
            scope_id=device_id,
            firmware=frozenset(ref.get("firmware", ())),
            control_software=frozenset(ref.get("control_software", ())),
            driver_build=frozenset(ref.get("driver_build", ())),
            calibration_digest=frozenset(ref.get("calibration_digest", ())),
            num_qubits=int(ref["num_qubits"]),
            # e.g. calibration = { two_qubit_error = [1e-5, 1e-3] } (see attestation.calibration)
            calibration=CalibrationWindows.from_document(ref.get("calibration", {})),
        )
    except (KeyError, ValueError) as exc:
        raise FacilityError(f"{where}: bad reference values: {exc}") from exc
    return SeedDevice(
        tier=_check_tier(str(entry.get("tier", "")), tiers, where),
        model=str(entry.get("model", device_id)),
        chain_pem=_read(base, entry, "certificate", where),
        reference=reference,
    )


class FacilityRef:
    """The current facility snapshot; `reload()` swaps it atomically or keeps the old one."""

    def __init__(self, path: Path, current: Facility | None = None) -> None:
        """The facility file at `path`, loaded now unless `current` is given (unit tests)."""
        self.path = path
        self.current = current if current is not None else load_facility(path)

    def reload(self) -> Facility:
        """Load the file again; on any error the old snapshot stays in force and it raises."""
        self.current = load_facility(self.path)
        return self.current
