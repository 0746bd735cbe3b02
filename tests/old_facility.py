"""A facility as `qtestbed init` wrote it before the issuing CAs (up to commit 065d865): the root
signed users' certificates (clientAuth, the principal in the common name only) and devices'
certificates directly; broker.toml had no client_ca_cert and facility.toml no [facility] id.

Made from today's `init` output by signing again with the root and removing what is new; the
root key goes back into ca/, where the old `init` left it.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from attestation.keys import VerifyKey, load_private_key
from attestation.pki import cert_from_pem, cert_to_pem, issue_certificate
from qtestbed.offline_ca import default_offline_ca


def make_old_style(root: Path) -> None:
    """Turn the new facility in `root` into one of the old kind, keeping every private key."""
    offline = default_offline_ca(root)
    (offline / "ca.key").rename(root / "ca" / "ca.key")
    shutil.rmtree(offline)  # the issuing CAs' keys and the certificate copies
    ca_key = load_private_key(root / "ca" / "ca.key")
    ca = cert_from_pem((root / "ca" / "ca.pem").read_bytes())
    when = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    for folder, client in (("users", True), ("devices", False)):
        for path in sorted((root / folder).glob("*.pem")):
            old = x509.load_pem_x509_certificate(path.read_bytes())
            name = str(old.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
            cert = issue_certificate(
                ca_key=ca_key,
                ca_cert=ca,
                subject_cn=name,
                public_key=VerifyKey.from_cryptography(old.public_key()),
                now=when,
                days=365,
                client=client,
                uris=() if client else (f"urn:qtestbed:device:{name}",),
            )
            path.write_bytes(cert_to_pem(cert))  # the leaf alone: no intermediate then
    for name in ("clients-ca", "devices-ca"):
        (root / "ca" / f"{name}.pem").unlink()
    broker = root / "broker.toml"
    text = re.sub(r"(?m)^# Principals' certificates.*\n", "", broker.read_text())
    broker.write_text(re.sub(r"(?m)^client_ca_cert = .*\n", "", text))
    facility = root / "facility.toml"
    facility.write_text(re.sub(r"(?m)^id = .*\n", "", facility.read_text(), count=1))
    forget_link_key_devices(root)


def forget_link_key_devices(root: Path) -> None:
    """Authorised link keys as they were before they named a device: the public key alone."""
    for path in sorted((root / "link" / "clients").glob("*.key")):
        path.write_text(re.sub(r"(?ms)^metadata\n(\s+.*?\n)*?(?=curve)", "", path.read_text()))
