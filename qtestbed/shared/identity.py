"""How a principal is named inside a client certificate, for both ends to agree on.

A researcher's (or scraper's) certificate carries the principal in a URI subject alternative
name, `qtestbed://FACILITY/principal/NAME`, issued by the facility's client-issuing CA with the
clientAuth usage. The broker takes the identity from this name, never from the common name.
Device certificates name their device as `urn:qtestbed:device:ID` (see `attestation.pki`).
"""

from __future__ import annotations

import re
import urllib.parse

SCHEME = "qtestbed"
_FACILITY_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


def facility_id_from_name(name: str) -> str:
    """A facility id (lowercase letters, digits, hyphens) made from a facility's name."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:63]
    return slug or "facility"


def check_facility_id(facility_id: str) -> str:
    if not _FACILITY_ID.fullmatch(facility_id):
        raise ValueError(
            f"facility id {facility_id!r} must be 1-63 lowercase letters, digits or '-', "
            "starting with a letter or digit"
        )
    return facility_id


def principal_uri(facility_id: str, name: str) -> str:
    """The URI SAN naming `name` at the facility `facility_id`."""
    check_facility_id(facility_id)
    return f"{SCHEME}://{facility_id}/principal/{urllib.parse.quote(name, safe='')}"


def principal_from_uri(uri: str, facility_id: str) -> str | None:
    """The principal a URI SAN names at this facility; None when it names none (another
    facility, another kind of name, or a malformed one)."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme != SCHEME or parts.netloc != facility_id or parts.query or parts.fragment:
        return None
    prefix = "/principal/"
    if not parts.path.startswith(prefix):
        return None
    quoted = parts.path[len(prefix) :]
    if not quoted or "/" in quoted:
        return None
    name = urllib.parse.unquote(quoted)
    return name if principal_uri(facility_id, name) == uri else None
