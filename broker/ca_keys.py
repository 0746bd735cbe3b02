"""The broker refuses to start where it can read a CA private key.

The broker needs CA certificates only (`ca_cert`, `client_ca_cert`). A CA key on its machine
turns whoever takes the broker (or its circuit-decoder child, or a backup of its folder) into
someone who can issue principals and devices. `qtestbed init` writes the CA keys to a folder of
their own for the operator to take offline; this check catches a key left, copied or moved back
where the broker runs.

It looks without opening anything: the broker never opens a CA key, not even to recognise one
(tests/e2e/test_onboarding.py watches its every open). A CA key is therefore recognised by name:
`ca.key`, `*-ca.key`, `*_ca.key`, and `NAME.key` beside each CA certificate `NAME.pem` the
broker is configured with; it is looked for in every folder holding a file the broker is
configured with, and in those folders' subfolders. A key it cannot read (another owner,
mode 0) does not stop it. No setting, flag or environment variable turns the check off.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from broker.settings import BrokerSettings, SettingsError

_CA_KEY_SUFFIXES = ("-ca.key", "_ca.key", ".ca.key")


class CaKeyOnBroker(SettingsError):
    """A CA private key the broker could read sits where the broker runs."""


def refuse_readable_ca_keys(settings: BrokerSettings) -> None:
    """Raise CaKeyOnBroker naming every readable CA key found (see the module docstring)."""
    found = sorted(readable_ca_keys(settings))
    if not found:
        return
    names = ", ".join(str(p) for p in found)
    raise CaKeyOnBroker(
        f"CA private key readable by the broker: {names}. The broker needs CA certificates "
        "only, and a CA key where it runs lets whoever takes the broker issue identities. "
        "Move the CA keys to the operator's offline CA folder (where `qtestbed credential "
        "issue --ca-dir` finds clients-ca.key), or run `qtestbed facility upgrade` on a "
        "facility made before they were kept apart, then start the broker again"
    )


def readable_ca_keys(settings: BrokerSettings) -> set[Path]:
    ca_stems = {settings.ca_cert.stem, settings.client_ca_cert.stem}
    found: set[Path] = set()
    for folder in _searched(_configured_folders(settings)):
        for path in _files(folder):
            if _is_ca_key_name(path.name, ca_stems) and os.access(path, os.R_OK):
                found.add(path)
    return found


def _configured_folders(settings: BrokerSettings) -> set[Path]:
    files = (
        settings.facility,
        settings.ca_cert,
        settings.client_ca_cert,
        settings.server_cert,
        settings.server_key,
        settings.link_secret_key,
        settings.export_control_profile,
        settings.policies,
    )
    return {p.absolute().parent for p in files} | {settings.link_clients.absolute()}


def _searched(folders: Iterable[Path]) -> Iterator[Path]:
    """Each folder and its subfolders one level down."""
    seen: set[Path] = set()
    for folder in folders:
        for candidate in (folder, *_subfolders(folder)):
            if candidate not in seen:
                seen.add(candidate)
                yield candidate


def _subfolders(folder: Path) -> list[Path]:
    try:
        with os.scandir(folder) as entries:
            return [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def _files(folder: Path) -> list[Path]:
    try:
        with os.scandir(folder) as entries:
            return [Path(e.path) for e in entries if e.is_file()]
    except OSError:
        return []


def _is_ca_key_name(name: str, ca_stems: set[str]) -> bool:
    if name == "ca.key" or name.endswith(_CA_KEY_SUFFIXES):
        return True
    return name.endswith(".key") and name[: -len(".key")] in ca_stems
