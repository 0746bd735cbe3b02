"""`qtestbed migrate`: bring the broker's store up to this release's schema.

Migrations are numbered and forward-only (`broker.store.schema`); all pending ones apply in one
transaction, under the store's migration lock, so brokers or Jobs running it together apply each
once. A broker never upgrades an existing store itself (see `schema.to_serve`): this command is
the upgrade step, run with every broker stopped and the store backed up.

Exit status: 0 the schema is current (or was made so), 1 with --check when migrations are
pending, 2 the command could not run (settings, store unreachable, a schema newer than this code).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtestbed.cli.errors import REFUSED, CommandError, guarded

if TYPE_CHECKING:
    from broker.store.schema import Migration
    from broker.store.sql_store import SqlStore


def register(sub: Any) -> None:
    p = sub.add_parser(
        "migrate",
        help="upgrade the broker's store to this release's schema (stop the brokers and back "
        "the store up first); --check only reports",
    )
    p.add_argument(
        "--config", type=Path, required=True, help="broker settings TOML: names the store"
    )
    p.add_argument("--store", help="store URL instead of the one in the settings")
    p.add_argument(
        "--check",
        action="store_true",
        help="apply nothing: list the pending migrations, exit 1 if there are any",
    )
    p.set_defaults(handler=cmd_migrate)


@guarded()
def cmd_migrate(args: argparse.Namespace) -> int:
    from broker.store import StoreError
    from broker.store import schema as schema_module

    store = _open(args)
    try:
        current = store.schema_version()
        print(f"store schema version {current}; this release's is {schema_module.LATEST_VERSION}")
        if args.check:
            todo = schema_module.pending(current)
            _list("pending", todo)
            return REFUSED if todo else 0
        applied = store.upgrade()
    except StoreError as exc:
        raise CommandError(f"cannot migrate the store: {exc}") from exc
    finally:
        store.close()
    _list("applied", applied)
    return 0


def _open(args: argparse.Namespace) -> SqlStore:
    from broker.settings import SettingsError, load_settings
    from broker.store import StoreError, open_store
    from broker.store.sql_store import SqlStore

    try:
        settings = load_settings(args.config, {"store": args.store})
        store = open_store(settings.store)
    except (SettingsError, StoreError, ValueError, OSError) as exc:
        raise CommandError(f"cannot migrate the store: {exc}") from exc
    if not isinstance(store, SqlStore):
        store.close()
        raise CommandError("a memory store has no schema to migrate: it starts empty every time")
    return store


def _list(what: str, migrations: list[Migration]) -> None:
    if not migrations:
        print(f"{what}: none, the schema is up to date")
    for m in migrations:
        print(f"{what} {m.version}: {m.description}")
