"""CurveZMQ keys for the broker-driver link, shared by broker, drivers and `qtestbed init`.

The link is always encrypted and mutually authenticated: the broker accepts only driver keys
placed in its clients folder, and drivers accept only the broker key they were given. Secret
key files must not be readable by group or others, like every private key here.
"""

from __future__ import annotations

import stat
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


def authorize_client(public_key: Path, clients: Path) -> None:
    """Let the driver holding this key pair connect (copy its public key to the broker's folder)."""
    clients.mkdir(parents=True, exist_ok=True)
    write_public(clients / public_key.name, public_key.read_bytes())


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
