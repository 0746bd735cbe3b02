"""The names a server certificate carries: DNS names and IP addresses, checked and split, so a
typo in `qtestbed init --broker-name` is refused before anything is written rather than found
when a driver's TLS check fails."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

# A DNS name: dot-separated labels of letters, digits and inner hyphens (a leading "*." label
# for a wildcard is not offered: each name the broker answers to is listed).
_DNS_NAME = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)


def split_names(names: Sequence[str]) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) of a server certificate's names, each once in order; a name
    that is neither raises ValueError saying so."""
    dns: list[str] = []
    ips: list[str] = []
    for name in names:
        try:
            address = str(ipaddress.ip_address(name))
        except ValueError:
            if not _DNS_NAME.match(name.lower()):
                raise ValueError(
                    f"broker name {name!r} is neither a DNS name (letters, digits, hyphens and "
                    "dots) nor an IP address"
                ) from None
            if name.lower() not in dns:
                dns.append(name.lower())
        else:
            if address not in ips:
                ips.append(address)
    return dns, ips
