"""`qtestbed audit verify`: check the broker's audit log against its signed checkpoints and,
with --witness FILE, against a witness's cosigned copy of them.

Exit status: 0 the log verifies, 1 it shows tampering (a finding: a named bad entry, missing or
stale checkpoints, a fork or rollback against the witness), 2 the check could not run
(settings, certificate, store or witness file unusable). A malformed row is a finding, never a
crash; with --json a verdict object is printed in every case.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtestbed.cli import witness
from qtestbed.cli.errors import CommandError, guarded
from qtestbed.cli.output import print_json

if TYPE_CHECKING:
    from attestation.keys import VerifyKey
    from attestation.witness_log import WitnessCopy
    from broker.audit.model import Checkpoint
    from broker.audit.verification import AuditVerdict
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
    p.add_argument(
        "--witness",
        type=Path,
        help="a witness's file (qtestbed audit witness --state DIR: DIR/witness.jsonl): its "
        "cosigned checkpoints catch deleted checkpoints, forks and a database rolled back",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print the verdict as JSON (always an object: ok, entries, checkpoints, "
        "first_bad, findings)",
    )
    p.set_defaults(handler=cmd_verify)
    witness.register(commands)


@guarded()
def cmd_verify(args: argparse.Namespace) -> int:
    """Exit 0 verified, 1 tampered, 2 cannot verify; with --json a verdict object every time."""
    try:
        verdict, key_id = _verify(args)
    except _CannotRun as exc:
        message = f"cannot verify the audit log: {exc}"
        if args.json:
            print_json(
                {
                    "ok": False,
                    "cannot_verify": message,
                    "entries": 0,
                    "checkpoints": 0,
                    "first_bad": None,
                    "findings": [],
                }
            )
        raise CommandError(message) from exc
    if args.json:
        print_json({**verdict.to_dict(), "key_id": key_id})
    else:
        print(render(verdict))
    return 0 if verdict.ok else 1


def _verify(args: argparse.Namespace) -> tuple[AuditVerdict, str]:
    """The verdict, and the id of the broker key that the checkpoints were checked against."""
    # Imported here: only this command reads the broker's store; the others never load it.
    from attestation.pki import CertificateError
    from attestation.witness_log import WitnessLogError, read_witness_log
    from broker.settings import SettingsError, load_settings

    try:
        settings = load_settings(args.config)
        key = broker_key(settings)
    except (SettingsError, CertificateError, OSError, ValueError) as exc:
        raise _CannotRun(str(exc)) from exc
    witness = None
    if args.witness is not None:
        try:
            witness = read_witness_log(args.witness, key)
        except WitnessLogError as exc:
            raise _CannotRun(str(exc)) from exc
        if witness.problems:
            raise _CannotRun(
                "the witness copy does not verify with the broker key: "
                + "; ".join(witness.problems[:3])
            )
    every = settings.timing.checkpoint_every_seconds
    return _verify_store(settings.store, key, every, witness), key.key_id


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


def _verify_store(
    url: str, key: VerifyKey, every_seconds: float, witness: WitnessCopy | None
) -> AuditVerdict:
    from broker.audit.verification import verify_audit
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
        return verify_audit(
            store,
            key,
            stored_checkpoints=checkpoints(),
            checkpoint_every_seconds=every_seconds,
            witness=witness,
        )
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


def render(verdict: AuditVerdict) -> str:
    """The human-readable verdict: one summary line, then one line per finding."""
    log = verdict.log
    counts = f"{verdict.entries} entries, {verdict.checkpoints} checkpoints checked"
    if verdict.witnessed:
        counts += f" ({verdict.witnessed} from the witness copy)"
    if verdict.ok:
        lines = [f"audit log OK: {counts}"]
        if log.verified_through:
            lines.append(f"  seq 1 to seq {log.verified_through} match a signed checkpoint")
        lines.extend(f"  {note}" for note in verdict.notes)
        return "\n".join(lines)
    if verdict.first_bad is None:
        head = f"audit log FAILED verification: {counts}"
    else:
        head = f"audit log TAMPERED: first bad entry seq {verdict.first_bad}; {counts}"
    lines = [head]
    if log.suspect_range is not None:
        low, high = log.suspect_range
        lines.append(f"  the first change lies between seq {low} and seq {high}")
    lines.extend(f"  - [{f.kind}] {f.message}" for f in verdict.findings)
    return "\n".join(lines)
