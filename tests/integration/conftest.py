"""Integration fixtures: a real facility (files from `qtestbed init`), a real broker, real
driver processes and mutual-TLS gRPC clients, all on 127.0.0.1 with ports chosen by the OS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from qtestbed.testing import LocalFacility


@pytest.fixture
def facility(tmp_path: Path) -> Iterator[LocalFacility]:
    with LocalFacility(tmp_path / "facility") as fac:
        yield fac


@pytest.fixture
def running(facility: LocalFacility) -> LocalFacility:
    """A started embedded broker with one driver for the open device, attested."""
    facility.start_broker()
    facility.start_driver("sim-open")
    facility.wait_available(facility.client("olivia"), "sim-open")
    return facility
