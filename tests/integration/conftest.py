"""Integration fixtures: a real facility (files from `qtestbed init`), a real broker, real
driver processes and mutual-TLS gRPC clients, all on 127.0.0.1 with ports chosen by the OS."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from qtestbed.testing import LocalFacility
from tests.integration.pg_cluster import pg_cluster as pg_cluster  # a fixture, for any test


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


def fresh_schema(pg_dsn: str) -> tuple[str, str]:
    """A new schema name in the test database and the store URL that uses it."""
    schema = f"qtestbed_it_{uuid.uuid4().hex[:12]}"
    joiner = "&" if "?" in pg_dsn else "?"
    return schema, f"{pg_dsn}{joiner}schema={schema}"


def drop_schema(pg_dsn: str, schema: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def pg_facility(tmp_path: Path, pg_dsn: str) -> Iterator[LocalFacility]:
    """A facility whose broker stores everything in a fresh PostgreSQL schema (dropped after)."""
    schema, store = fresh_schema(pg_dsn)
    with LocalFacility(tmp_path / "facility", store=store) as fac:
        yield fac
    drop_schema(pg_dsn, schema)
