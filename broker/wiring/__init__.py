"""The broker's object graph, built once in dependency order: every service receives what it
uses through its constructor, and nothing is set on it afterwards.

Floors, from the ground up: the store runner, clock, metrics and audit log; the device and
access registries; the clearance gate; the job services; the driver link (attestor, lease
keeper, dispatcher, hub); the gRPC servicers and the /metrics gate. `broker.app` starts and
stops what this builds.
"""

from __future__ import annotations

from broker.wiring.core import job_parts, registries
from broker.wiring.edges import edge, link_parts, scrape_gate, servicers, services
from broker.wiring.parts import (
    Components,
    Foundation,
    JobParts,
    LinkParts,
    Registries,
    Services,
)

__all__ = [
    "Components",
    "Foundation",
    "JobParts",
    "LinkParts",
    "Registries",
    "Services",
    "build",
]


def build(base: Foundation) -> Components:
    r = registries(base)
    j = job_parts(base, r)
    link = link_parts(base, r, j)
    s = services(base, r, j, link)
    return Components(
        base=base,
        registries=r,
        jobs=j,
        link=link,
        services=s,
        servicers=servicers(base, r, s),
        edge=edge(base, r),
        scrape=scrape_gate(base, r),
    )
