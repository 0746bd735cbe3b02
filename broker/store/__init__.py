"""Job stores: pick one by URL with `open_store`."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

from broker.audit.chain import GENESIS_HASH, chain_hash, verify_chain
from broker.store.base import BrokerStore, CheckpointSuperseded, Store, StoreError

__all__ = [
    "GENESIS_HASH",
    "BrokerStore",
    "CheckpointSuperseded",
    "Store",
    "StoreError",
    "chain_hash",
    "is_postgres_url",
    "open_store",
    "verify_chain",
]

_SQLITE_SUFFIXES = (".db", ".sqlite3")
MEMORY_URL = "memory:"
ACCEPTED_FORMS = (
    "sqlite:///absolute/path.db, sqlite:relative/path.db, a file path ending in "
    f"{' or '.join(_SQLITE_SUFFIXES)}, postgresql://user@host:port/dbname[?schema=NAME], "
    f"postgres://..., or {MEMORY_URL} (an empty in-memory store, gone when the process exits)"
)


def is_postgres_url(url: str) -> bool:
    """Whether `url` names a PostgreSQL store (one that several replicas may share)."""
    return url.startswith(("postgresql://", "postgres://"))


def open_store(url: str) -> BrokerStore:
    """Open (but do not migrate) the store `url` names; ValueError for an unknown form."""
    if is_postgres_url(url):
        # Imported here so psycopg stays an optional dependency for SQLite-only installs.
        from broker.store.postgres import PostgresStore

        dsn, schema = split_schema(url)
        return PostgresStore(dsn, schema=schema) if schema else PostgresStore(dsn)
    if url.startswith(MEMORY_URL):
        if url != MEMORY_URL:
            raise _unknown(url)
        from broker.store.memory import MemoryStore

        return MemoryStore()
    from broker.store.sqlite import SqliteStore

    return SqliteStore(sqlite_path(url))


def split_schema(url: str) -> tuple[str, str | None]:
    """Take our own `schema=NAME` query parameter (not a libpq one) out of a PostgreSQL URL.

    Several brokers or test runs can then share one database, each in its own schema.
    """
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in query if k == "schema"), None)
    rest = urllib.parse.urlencode([(k, v) for k, v in query if k != "schema"])
    return urllib.parse.urlunsplit(parts._replace(query=rest)), schema


def sqlite_path(url: str) -> Path:
    """The file a SQLite store URL or bare path names."""
    if url.startswith("sqlite:///"):
        # Three slashes then the absolute path; SQLAlchemy's four-slash form means the same.
        rest = url.removeprefix("sqlite://").lstrip("/")
        if rest:
            return Path("/" + rest)
    elif url.startswith("sqlite:") and not url.startswith("sqlite://"):
        rest = url.removeprefix("sqlite:")
        if rest:
            return Path(rest)
    elif "://" not in url and url.endswith(_SQLITE_SUFFIXES):
        return Path(url)
    raise _unknown(url)


def _unknown(url: str) -> ValueError:
    # Show only the scheme of a URL: what follows it may carry a password.
    shown = url.split("://", 1)[0] + "://..." if "://" in url else url
    return ValueError(f"unknown store URL {shown!r}; accepted forms: {ACCEPTED_FORMS}")
