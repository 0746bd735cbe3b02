"""Fixtures shared by every test layer."""

from __future__ import annotations

import os

import pytest

PG_DSN_ENV = "QTESTBED_TEST_PG_DSN"


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    """DSN of a reachable PostgreSQL server for tests marked `postgres`.

    Unset: the test is skipped on a workstation but fails in CI, where PostgreSQL must run.
    Set but unreachable: the test fails, because a silent skip would hide a broken CI service.
    """
    dsn = os.environ.get(PG_DSN_ENV, "")
    if not dsn:
        if os.environ.get("CI") == "true":
            pytest.fail(
                f"{PG_DSN_ENV} is not set, but CI must exercise PostgreSQL: start a server "
                f"and export {PG_DSN_ENV}=postgresql://user@host:5432/dbname"
            )
        pytest.skip(f"PostgreSQL tests need {PG_DSN_ENV}=postgresql://user@host:5432/dbname")
    import psycopg  # only needed when PostgreSQL tests run

    try:
        psycopg.connect(dsn, connect_timeout=5).close()
    except psycopg.Error as exc:
        pytest.fail(f"{PG_DSN_ENV} is set but PostgreSQL is unreachable: {exc}")
    return dsn
