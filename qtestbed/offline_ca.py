"""The facility's CA keys live outside its folder, where the operator takes them offline.

`qtestbed init` writes them to `default_offline_ca(DIR)` (or `--offline-ca`), and
`qtestbed facility upgrade` moves an older facility's out of DIR/ca/ with `move_ca_keys_out`.
Beside each key goes a copy of its certificate: `credential issue --ca-dir` wants both.
The broker refuses to start where it can read one (`broker.ca_keys`).
"""

from __future__ import annotations

from pathlib import Path

from attestation.secretfile import move_secret, private_folder, write_public

OFFLINE_CA_SUFFIX = "-offline-ca"
CA_NAMES = ("ca", "clients-ca", "devices-ca")  # the root, then the two issuing CAs


def default_offline_ca(root: Path) -> Path:
    """Where the CA keys go unless told: a folder beside the facility's, never in it."""
    return root.parent / f"{root.name}{OFFLINE_CA_SUFFIX}"


def check_outside(root: Path, offline: Path) -> None:
    """ValueError if `offline` is `root` or inside it, where the broker runs."""
    if offline.resolve().is_relative_to(root.resolve()):
        raise ValueError(
            f"the CA keys' folder {offline} is inside the facility folder {root}, where the "
            "broker runs; choose one outside it (--offline-ca)"
        )


def ca_keys_in(root: Path) -> list[Path]:
    """The CA keys an older `init` left in DIR/ca/."""
    return [p for p in (root / "ca" / f"{n}.key" for n in CA_NAMES) if p.exists()]


def move_ca_keys_out(root: Path, offline: Path) -> list[Path]:
    """Move every CA key in DIR/ca/ to `offline` (created owner-only), each with a copy of its
    certificate; returns where the keys are now. Refuses (FileExistsError) to replace a key
    already there, before moving anything."""
    check_outside(root, offline)
    keys = ca_keys_in(root)
    clashes = [str(offline / k.name) for k in keys if (offline / k.name).exists()]
    if clashes:
        raise FileExistsError(
            f"{', '.join(clashes)} exist already; move the facility's CA keys by hand, or "
            "choose another --offline-ca folder"
        )
    private_folder(offline)
    moved = []
    for key in keys:
        cert = key.with_suffix(".pem")
        if cert.exists() and not (offline / cert.name).exists():
            write_public(offline / cert.name, cert.read_bytes())  # the issuer needs it beside
        move_secret(key, offline / key.name)
        moved.append(offline / key.name)
    return moved
