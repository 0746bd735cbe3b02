"""CurveZMQ keys for the broker-driver link, shared by broker, drivers and `qtestbed init`.

The link is always encrypted and mutually authenticated: the broker accepts only driver keys
placed in its clients folder, and drivers accept only the broker key they were given. Secret
key files must not be readable by group or others, like every private key here.

An authorised key names the one device it may speak for (`device-id` in the key file's
metadata section, ZPL as CurveZMQ certificates use it): the link identity of a driver is its
public key, and the key decides the device, never a field the driver sends.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.auth

from attestation.secretfile import write_public, write_secret


class LinkKeyError(Exception):
    """A link key file is missing, unreadable, malformed or too widely readable."""


def create_keypair(folder: Path, name: str) -> tuple[Path, Path]:
    """Write `name.key` (public) and `name.key_secret` (0600 from creation, atomically:
    `attestation.secretfile`); returns both paths. The files are in pyzmq's certificate format,
    which `zmq.auth.load_certificate` reads."""
    folder.mkdir(parents=True, exist_ok=True)
    public_key, secret_key = zmq.curve_keypair()
    public, secret = folder / f"{name}.key", folder / f"{name}.key_secret"
    write_secret(secret, _certificate(_SECRET_BANNER, public_key, secret_key))
    write_public(public, _certificate(_PUBLIC_BANNER, public_key, None))
    return public, secret


_SECRET_BANNER = "#   ZeroMQ CURVE **Secret** Certificate: never give it away\n"  # noqa: S105
_PUBLIC_BANNER = "#   ZeroMQ CURVE Public Certificate\n"


def _certificate(banner: str, public_key: bytes, secret_key: bytes | None) -> bytes:
    # zmq.auth.create_certificates writes with the umask: the same text, written here instead.
    lines = [banner, "metadata", "curve", f'    public-key = "{public_key.decode()}"']
    if secret_key is not None:
        lines.append(f'    secret-key = "{secret_key.decode()}"')
    return ("\n".join(lines) + "\n").encode()


def authorize_client(public_key: Path, clients: Path, *, device_id: str) -> Path:
    """Let the driver holding this key pair connect, for `device_id` only: writes its public key
    into the broker's folder with the device it is authorised for; returns the written file."""
    clients.mkdir(parents=True, exist_ok=True)
    public, _ = _load(public_key, secret=False)
    target = clients / public_key.name
    write_public(target, _authorised_text(public, device_id).encode())
    return target


def authorise_device(authorised_key: Path, device_id: str) -> None:
    """Name the device an already authorised key (an older facility's, without one) speaks for."""
    public, _ = _load(authorised_key, secret=False)
    write_public(authorised_key, _authorised_text(public, device_id).encode())


def _authorised_text(public: bytes, device_id: str) -> str:
    if not _DEVICE_ID.fullmatch(device_id):
        raise LinkKeyError(f"cannot authorise a link key for device id {device_id!r}")
    return (
        "#   qtestbed: an authorised driver link key, for one device only\n"
        "metadata\n"
        f'    device-id = "{device_id}"\n'
        "curve\n"
        f'    public-key = "{public.decode("ascii")}"\n'
    )


# Device ids as the registry accepts them; anything else in a key file is not an authorisation.
_DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_DEVICE_LINE = re.compile(r'^\s+device-id\s*=\s*"([^"]*)"\s*$')


def authorised_device(path: Path) -> str | None:
    """The device id a key file in the clients folder is authorised for; None when it names none
    (a key from before authorisations named devices: `qtestbed facility upgrade` adds it)."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise LinkKeyError(f"cannot read link key {path}: {exc}") from exc
    section = ""
    for line in lines:
        if line and not line[0].isspace() and not line.startswith("#"):
            section = line.strip()
            continue
        found = _DEVICE_LINE.match(line)
        if section == "metadata" and found and _DEVICE_ID.fullmatch(found.group(1)):
            return found.group(1)
    return None


@dataclass(frozen=True, kw_only=True, slots=True)
class AuthorisedKeys:
    """The clients folder as the broker reads it."""

    # Z85 public key (the ZAP User-Id) -> the one device id it may speak for.
    devices: Mapping[str, str]
    # Key files that name no device, or could not be read: they authorise nothing.
    unusable: tuple[str, ...]


def authorised_keys(clients: Path) -> AuthorisedKeys:
    """Every authorised driver key in `clients` and the device each one is for."""
    if not clients.is_dir():
        raise LinkKeyError(f"driver key folder {clients} does not exist")
    devices: dict[str, str] = {}
    unusable: list[str] = []
    for path in sorted(clients.glob("*.key")):
        try:
            public, _ = _load(path, secret=False)
            device_id = authorised_device(path)
        except LinkKeyError:
            unusable.append(path.name)
            continue
        if device_id is None:
            unusable.append(path.name)
        else:
            devices[public.decode("ascii")] = device_id
    return AuthorisedKeys(devices=devices, unusable=tuple(unusable))


def load_public(path: Path) -> bytes:
    """The Z85 public key of a key file (public or secret)."""
    public, _ = _load(path, secret=False)
    return public


def load_keypair(secret_path: Path) -> tuple[bytes, bytes]:
    """(public, secret), both Z85, from a secret key file that only its owner can read."""
    public, secret = _load(secret_path, secret=True)
    assert secret is not None  # _load refuses a secret file without one
    return public, secret


def _load(path: Path, *, secret: bool) -> tuple[bytes, bytes | None]:
    try:
        mode = path.stat().st_mode
        public, secret_key = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise LinkKeyError(f"cannot read link key {path}: {exc}") from exc
    if secret and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise LinkKeyError(f"link secret key {path} is readable by others; run `chmod 600 {path}`")
    if secret and secret_key is None:
        raise LinkKeyError(f"{path} holds no secret key")
    return public, secret_key


def configure_server(sock: zmq.Socket[Any], secret_path: Path) -> None:
    public, secret = _load(secret_path, secret=True)
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_server = True


def configure_client(sock: zmq.Socket[Any], secret_path: Path, server_public: Path) -> None:
    public, secret = _load(secret_path, secret=True)
    server_key, _ = _load(server_public, secret=False)
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_serverkey = server_key
