"""`qtestbed audit verify`: check the broker's audit log against its signed checkpoints.

Exit status: 0 the log verifies, 1 it shows tampering, 2 the check could not run (settings,
certificate or store unusable).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtestbed.cli.errors import CommandError, guarded
from qtestbed.cli.output import print_json

if TYPE_CHECKING:
    from attestation.keys import VerifyKey
    from broker.audit.model import Checkpoint
    from broker.audit.verify import LogVerdict
    from broker.settings import BrokerSettings


def register(sub: Any) -> None:
    # `qtestbed audit` is shared with the operator's `audit stream`: join whichever came first.
    audit = sub.choices.get("audit")
    if audit is None:
        audit = sub.add_parser("audit", help="security: the tamper-evident audit log")
        audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    commands = next(a for a in audit._actions if isinstance(a, argparse._SubParsersAction))
    p = commands.add_parser(
        "verify",
        help="verify the audit log's hash chain and signed checkpoints "
        "(exit 0 intact, 1 tampered, 2 cannot check)",
    )
    p.add_argument(
        "--config",
        type=Path,
        required=True,
        help="broker settings TOML: names the store and the broker certificate whose key "
        "signs the checkpoints",
    )
    p.add_argument("--json", action="store_true", help="print the verdict as JSON")
    p.set_defaults(handler=cmd_verify)


@guarded()
def cmd_verify(args: argparse.Namespace) -> int:
    # Imported here: only this command reads the broker's store; the others never load it.
    from attestation.pki import CertificateError
    from broker.settings import SettingsError, load_settings

    try:
        settings = load_settings(args.config)
        key = broker_key(settings)
    except (SettingsError, CertificateError, OSError, ValueError) as exc:
        raise CommandError(f"cannot verify the audit log: {exc}") from exc
    try:
        verdict = _verify_store(settings.store, key)
    except _CannotRun as exc:
        raise CommandError(f"cannot verify the audit log: {exc}") from exc
    if args.json:
        print_json({**verdict.to_dict(), "key_id": key.key_id})
    else:
        print(render(verdict))
    return 0 if verdict.ok else 1


def broker_key(settings: BrokerSettings) -> VerifyKey:
    """The public key of the broker certificate, which signs the checkpoints."""
    from attestation.keys import VerifyKey
    from attestation.pki import cert_from_pem

    try:
        pem = settings.server_cert.read_bytes()
    except OSError as exc:
        raise OSError(f"cannot read broker certificate {settings.server_cert}: {exc}") from exc
    cert = cert_from_pem(pem)
    return VerifyKey.from_cryptography(cert.public_key())


class _CannotRun(Exception):
    """The store cannot be read as needed."""


def _verify_store(url: str, key: VerifyKey) -> LogVerdict:
    from broker.audit.crosscheck import crosscheck_store, with_job_findings
    from broker.audit.verify import iter_entries, verify_log
    from broker.store import StoreError, open_store

    _refuse_missing_sqlite(url)
    try:
        store = open_store(url)
    except (StoreError, ValueError) as exc:
        raise _CannotRun(str(exc)) from exc
    try:
        checkpoints: Callable[[], list[Checkpoint]] | None = getattr(store, "checkpoints", None)
        if not callable(checkpoints):
            raise _CannotRun(f"the {type(store).__name__} store cannot list audit checkpoints")
        verdict = verify_log(iter_entries(store), checkpoints(), key)
        # Jobs and results rows against the entries that recorded them (names job and seq).
        return with_job_findings(verdict, crosscheck_store(store))
    except StoreError as exc:
        raise _CannotRun(str(exc)) from exc
    finally:
        store.close()


def _refuse_missing_sqlite(url: str) -> None:
    """Opening a missing SQLite file would create an empty one, which then 'verifies'."""
    from broker.store import sqlite_path

    if url.startswith(("postgresql://", "postgres://")):
        return
    try:
        path = sqlite_path(url)
    except ValueError as exc:
        raise _CannotRun(str(exc)) from exc
    if not path.is_file():
        raise _CannotRun(f"no SQLite store at {path}")


def render(verdict: LogVerdict) -> str:
    """The human-readable verdict: one summary line, then one line per problem."""
    counts = f"{verdict.entries_checked} entries, {verdict.checkpoints_checked} checkpoints checked"
    if verdict.ok:
        lines = [f"audit log OK: {counts}"]
        if verdict.verified_through:
            lines.append(f"  seq 1 to seq {verdict.verified_through} match a signed checkpoint")
        if verdict.unprotected_tail:
            lines.append(
                f"  {verdict.unprotected_tail} entries after the last checkpoint are protected "
                "by the hash chain only"
            )
        return "\n".join(lines)
    if verdict.first_bad_seq is None:
        head = f"audit log FAILED verification: {counts}"
    else:
        head = f"audit log TAMPERED: first bad entry seq {verdict.first_bad_seq}; {counts}"
    lines = [head]
    if verdict.suspect_range is not None:
        low, high = verdict.suspect_range
        lines.append(f"  the first change lies between seq {low} and seq {high}")
    lines.extend(f"  - {problem}" for problem in verdict.problems)
    return "\n".join(lines)
