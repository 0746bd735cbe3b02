"""CurveZMQ keys for the broker-driver link, shared by broker, drivers and `qtestbed init`.

The link is always encrypted and mutually authenticated: the broker accepts only driver keys
placed in its clients folder, and drivers accept only the broker key they were given. Secret
key files must not be readable by group or others, like every private key here.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import Any

import zmq
import zmq.auth


class LinkKeyError(Exception):
    """A link key file is missing, unreadable, malformed or too widely readable."""


def create_keypair(folder: Path, name: str) -> tuple[Path, Path]:
    """Write `name.key` (public) and `name.key_secret` (0600); returns both paths."""
    folder.mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(folder, name)
    os.chmod(secret, 0o600)
    return Path(public), Path(secret)


def authorize_client(public_key: Path, clients: Path) -> None:
    """Let the driver holding this key pair connect (copy its public key to the broker's folder)."""
    clients.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(public_key, clients / public_key.name)


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
