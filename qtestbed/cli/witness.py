"""`qtestbed audit witness`: run the audit witness (see `qtestbed.witness`) as its own process.

    qtestbed audit witness --state DIR --log-cert BROKER_PEM --profile SECURITY_PROFILE

DIR holds the witness's key (`witness.key`, created 0600 on first run; `witness.pub` is what the
operator registers under [witnesses] in broker.toml) and its append-only file `witness.jsonl`,
which `qtestbed audit verify --witness` reads. The witness calls the broker as the profile's
principal (a security-role principal). Its metrics (`qtestbed_witness_*`) are served on
--metrics-listen.

Exit status: 0 stopped with no alarm; 3 an alarm (fork, rollback, inconsistent or bad
checkpoint) is on file, now or from before; 1 with --once, the broker refused or could not be
reached; 2 the witness could not start (its files, the broker certificate, the profile).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

from qtestbed.cli.common import client_options
from qtestbed.cli.errors import CommandError, guarded
from qtestbed.cli.output import print_json
from qtestbed.cli.runner import broker_command, open_client
from qtestbed.client import Client, QtestbedError
from qtestbed.v1 import admin_pb2

ALARM_EXIT = 3


def register(audit_actions: Any) -> None:
    p = audit_actions.add_parser(
        "witness",
        help="security: witness the broker's audit checkpoints (cosign, or alarm on a fork or "
        "rollback); runs until stopped",
    )
    p.add_argument("--state", type=Path, required=True, help="the witness's own folder")
    p.add_argument(
        "--log-cert",
        type=Path,
        required=True,
        help="the broker's certificate (its key signs the checkpoints), obtained out of band",
    )
    p.add_argument("--interval", type=float, default=10.0, help="seconds between polls")
    p.add_argument("--once", action="store_true", help="poll once and exit")
    p.add_argument(
        "--metrics-listen",
        default="127.0.0.1:9465",
        help="HOST:PORT for the witness's /metrics (port 0 picks one; '' for none)",
    )
    client_options(p)
    p.set_defaults(handler=cmd_witness)
    p = audit_actions.add_parser(
        "checkpoints", help="security: the broker's signed checkpoints and who witnessed each"
    )
    client_options(p)
    p.set_defaults(handler=cmd_checkpoints)


@broker_command()
def cmd_checkpoints(args: argparse.Namespace, c: Client) -> int:
    reply = c.call(c.audit.ListCheckpoints, admin_pb2.ListCheckpointsRequest())
    rows = [
        {
            "tree_size": cp.tree_size,
            "root_hash": cp.root_hash,
            "at": cp.at,
            "key_id": cp.key_id,
            "witnesses": [w.witness for w in cp.cosignatures],
            "cosignatures": [
                {"witness": w.witness, "key_id": w.key_id, "witnessed_at": w.witnessed_at}
                for w in cp.cosignatures
            ],
        }
        for cp in reply.checkpoints
    ]
    if args.json:
        print_json({"checkpoints": rows})
        return 0
    for row in rows:
        when = dt.datetime.fromtimestamp(float(row["at"]), dt.UTC).isoformat(timespec="seconds")
        names = ", ".join(row["witnesses"]) or "no witness yet"
        print(f"{row['tree_size']:>8}  {when}  {str(row['root_hash'])[:16]}...  {names}")
    if not rows:
        print("no checkpoints")
    return 0


class BrokerLog:
    """The broker's audit service over mutual-TLS gRPC."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def checkpoint_envelopes(self, min_tree_size: int) -> list[bytes]:
        request = admin_pb2.ListCheckpointsRequest(min_tree_size=min_tree_size)
        reply = self._client.call(self._client.audit.ListCheckpoints, request)
        return [bytes(c.envelope) for c in reply.checkpoints]

    def consistency_proof(self, first_size: int, second_size: int) -> list[bytes]:
        request = admin_pb2.GetConsistencyProofRequest(
            first_size=first_size, second_size=second_size
        )
        reply = self._client.call(self._client.audit.GetConsistencyProof, request)
        return [bytes(h) for h in reply.hashes]

    def add_cosignature(self, tree_size: int, envelope: bytes) -> None:
        request = admin_pb2.AddCosignatureRequest(tree_size=tree_size, envelope=envelope)
        self._client.call(self._client.audit.AddCosignature, request)

    def offer_cosignature(self, tree_size: int, envelope: bytes) -> None:
        try:
            self.add_cosignature(tree_size, envelope)
        except QtestbedError as exc:
            logging.getLogger("qtestbed.witness").error(
                "the broker refused this witness's cosignature of tree size %d: %s", tree_size, exc
            )


@guarded()
def cmd_witness(args: argparse.Namespace) -> int:
    from qtestbed.witness import Witness
    from qtestbed.witness_metrics import WitnessMetrics

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    key, log_key = _keys(args)
    metrics = WitnessMetrics()
    try:
        witness = Witness(
            path=args.state / "witness.jsonl",
            key=key,
            log_key=log_key,
            clock=time.time,
            on_alarm=metrics.alarm,
        )
    except ValueError as exc:
        raise CommandError(f"witness cannot start: {exc}") from exc
    metrics.load(witness.alarms, witness.latest)
    address = _serve_metrics(metrics, args.metrics_listen)
    ready = {"metrics": address, "key_id": key.public_key.key_id}
    print(f"qtestbed witness ready {json.dumps(ready)}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with open_client(args.profile) as client:
        source = BrokerLog(client)
        while True:
            try:
                outcome = witness.poll(source)
                metrics.polled(outcome.cosigned)
            except QtestbedError as exc:
                metrics.poll_failed()
                logging.getLogger("qtestbed.witness").warning("poll failed: %s", exc)
                if args.once:
                    raise CommandError(f"witness poll failed: {exc}", code=1) from exc
            if args.once or stop.wait(args.interval):
                break
    return ALARM_EXIT if witness.alarms else 0


def _keys(args: argparse.Namespace) -> tuple[Any, Any]:
    from attestation.keys import (
        KeyFileError,
        SigningKey,
        VerifyKey,
        create_private_key_file,
        load_private_key,
    )
    from attestation.pki import CertificateError, cert_from_pem

    state: Path = args.state
    try:
        state.mkdir(mode=0o700, parents=True, exist_ok=True)
        key_path = state / "witness.key"
        if not key_path.exists():
            create_private_key_file(SigningKey.generate(), key_path)
        key = load_private_key(key_path)
        (state / "witness.pub").write_bytes(key.public_key.to_pem())
        log_key = VerifyKey.from_cryptography(
            cert_from_pem(args.log_cert.read_bytes()).public_key()
        )
    except (OSError, KeyFileError, CertificateError, ValueError) as exc:
        raise CommandError(f"witness cannot start: {exc}") from exc
    return key, log_key


def _serve_metrics(metrics: Any, listen: str) -> str:
    if not listen:
        return ""
    host, _, port = listen.rpartition(":")
    try:
        return str(metrics.serve(host.strip("[]") or "127.0.0.1", int(port)))
    except (OSError, ValueError) as exc:
        raise CommandError(f"witness cannot serve metrics on {listen}: {exc}") from exc
