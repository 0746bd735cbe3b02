"""Researcher commands: submit, status, result, cancel, jobs, devices, quota (each with --json)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict

from qtestbed.cli import access
from qtestbed.cli.common import client_options, fail, format_time, open_client
from qtestbed.client import QtestbedError, bundle_of
from qtestbed.v1 import devices_pb2, jobs_pb2

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "DENIED"}


def register(sub: Any) -> None:
    p = sub.add_parser("submit", help="submit a circuit file (OpenQASM 2/3 or QPY)")
    p.add_argument("file", type=Path, help="circuit file: .qasm (2 or 3) or .qpy")
    p.add_argument("--device", default="", help="device id (see `qtestbed devices`)")
    p.add_argument("--shots", type=int, default=1024, help="number of shots (default 1024)")
    p.add_argument("--format", choices=["qasm2", "qasm3", "qpy"], help="override format detection")
    p.add_argument("--wait", action="store_true", help="follow the job live until it finishes")
    p.add_argument("--idempotency-key", help="reuse to make a retried submit safe")
    p.add_argument("--project", default="", help="project the job is for (if you have several)")
    p.add_argument(
        "--priority",
        choices=sorted(_PRIORITIES),
        default="normal",
        help="class within your project",
    )
    p.add_argument("--session", default="", help="run inside this open session (its device)")
    chooser = p.add_argument_group("device selection, instead of --device")
    chooser.add_argument("--min-qubits", type=int, default=0)
    chooser.add_argument("--basis-gate", action="append", default=[], help="repeatable")
    chooser.add_argument("--tier", default="", help="only devices of this tier")
    chooser.add_argument("--max-two-qubit-error", type=float, default=0.0)
    client_options(p)
    p.set_defaults(handler=cmd_submit)
    for name, help_text, handler in (
        ("status", "show a job's state, queue position and ETA", cmd_status),
        ("watch", "follow a job live: every state and queue-position change", cmd_watch),
        (
            "result",
            "show a completed job's counts and verify its receipt (--save to keep it)",
            cmd_result,
        ),
        ("cancel", "cancel a queued or running job", cmd_cancel),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("job_id")
        if name == "result":
            p.add_argument(
                "--save", type=Path, help="write a result bundle for `qtestbed receipt verify`"
            )
        client_options(p)
        p.set_defaults(handler=handler)
    p = sub.add_parser("jobs", help="list your jobs, newest first")
    p.add_argument("--device", default="", help="only jobs for this device")
    p.add_argument("--limit", type=int, default=20)
    client_options(p)
    p.set_defaults(handler=cmd_jobs)
    p = sub.add_parser("devices", help="list the devices you may use")
    client_options(p)
    p.set_defaults(handler=cmd_devices)
    access.register_quota(sub)


def _dict(message: Any) -> dict[str, Any]:
    out: dict[str, Any] = MessageToDict(message, preserving_proto_field_name=True)
    return out


def _state(job: jobs_pb2.Job) -> str:
    return jobs_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_")


_PRIORITIES = {
    "low": jobs_pb2.JOB_PRIORITY_LOW,
    "normal": jobs_pb2.JOB_PRIORITY_NORMAL,
    "high": jobs_pb2.JOB_PRIORITY_HIGH,
}


def describe(job: jobs_pb2.Job) -> str:
    line = f"{job.job_id}  {_state(job):<10} device={job.device_id} shots={job.shots}"
    if job.queue_position:
        line += f" queue_position={job.queue_position} of {job.device_queue_depth}"
        if job.HasField("eta"):
            line += f" eta={format_time(job.eta)}"
    if job.session_id:
        line += f" session={job.session_id[:12]}"
    if job.attempts > 1:
        line += f" attempts={job.attempts}"
    if job.reason:
        line += f"\n  reason: {job.reason}"
    if job.rule_id:
        line += f"\n  rule: {job.rule_id}"
    if job.waiting_for:
        line += f"\n  waiting for: {job.waiting_for}"
    if job.evidence_digest:
        line += (
            f"\n  ran under evidence {job.evidence_digest[:16]}..., "
            f"calibration {job.calibration_digest[:16]}..."
        )
    return line


def _refused(exc: QtestbedError) -> int:
    return fail(str(exc), code=1)


def cmd_submit(args: argparse.Namespace) -> int:
    try:
        payload = args.file.read_bytes()
    except OSError as exc:
        return fail(f"cannot read {args.file}: {exc}")
    with open_client(args.profile) as client:
        try:
            response = client.submit(
                payload,
                device_id=args.device,
                shots=args.shots,
                fmt=args.format,
                idempotency_key=args.idempotency_key,
                project=args.project,
                priority=_PRIORITIES[args.priority],
                selector=_selector(args),
                session_id=args.session,
            )
            job = response.job
            if args.wait:
                for update in client.watch(job.job_id):
                    job = update
                    if not args.json:
                        print(describe(job), file=sys.stderr, flush=True)
        except QtestbedError as exc:
            return _refused(exc)
        return _print_job(client, job, args.json, with_result=args.wait)


def _selector(args: argparse.Namespace) -> jobs_pb2.DeviceSelector | None:
    if not (args.min_qubits or args.basis_gate or args.tier or args.max_two_qubit_error):
        return None
    return jobs_pb2.DeviceSelector(
        min_qubits=args.min_qubits,
        basis_gates=args.basis_gate,
        tier=args.tier,
        max_two_qubit_error=args.max_two_qubit_error,
    )


def cmd_watch(args: argparse.Namespace) -> int:
    with open_client(args.profile) as client:
        try:
            job = client.get_job(args.job_id)
            for update in client.watch(args.job_id):
                job = update
                print(json.dumps(_dict(job)) if args.json else describe(job), flush=True)
        except QtestbedError as exc:
            return _refused(exc)
    return 0 if _state(job) == "COMPLETED" else 1


def _print_job(client: Any, job: jobs_pb2.Job, as_json: bool, *, with_result: bool) -> int:
    result = None
    if with_result and _state(job) == "COMPLETED":
        result = client.result(job.job_id)
    if as_json:
        out = {"job": _dict(job)}
        if result is not None:
            out["result"] = {
                "counts": dict(result.counts),
                "receipt_problems": client.verify_result(result, job),
            }
        print(json.dumps(out, indent=2))
    else:
        print(describe(job))
        if result is not None:
            _print_counts(result)
    return 0 if _state(job) in {"COMPLETED", "QUEUED", "DISPATCHED", "RUNNING"} else 1


def _print_counts(result: jobs_pb2.JobResult) -> None:
    for bits, count in sorted(result.counts.items(), key=lambda kv: -kv[1]):
        print(f"  {bits}  {count}")


def cmd_status(args: argparse.Namespace) -> int:
    with open_client(args.profile) as client:
        try:
            job = client.get_job(args.job_id)
        except QtestbedError as exc:
            return _refused(exc)
        print(json.dumps(_dict(job), indent=2) if args.json else describe(job))
    return 0


def cmd_result(args: argparse.Namespace) -> int:
    with open_client(args.profile) as client:
        try:
            job = client.get_job(args.job_id)
            result = client.result(args.job_id)
        except QtestbedError as exc:
            return _refused(exc)
        problems = client.verify_result(result, job)
        if args.save is not None:
            args.save.write_text(bundle_of(result, job).to_json())
        if args.json:
            body = _dict(result)
            body.pop("receipt", None)
            body.pop("device_certificate", None)
            body["receipt_valid"] = not problems
            body["receipt_problems"] = problems
            print(json.dumps(body, indent=2))
        else:
            print(f"{job.job_id} on {result.device_id}: {result.execution_seconds:.3f}s")
            _print_counts(result)
            print(
                "receipt: "
                + (
                    "valid (signed by the attested device)"
                    if not problems
                    else "INVALID: " + "; ".join(problems)
                )
            )
    return 0 if not problems else 3


def cmd_cancel(args: argparse.Namespace) -> int:
    with open_client(args.profile) as client:
        try:
            job = client.cancel(args.job_id)
        except QtestbedError as exc:
            return _refused(exc)
        print(json.dumps(_dict(job), indent=2) if args.json else describe(job))
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    with open_client(args.profile) as client:
        try:
            jobs = client.list_jobs(device_id=args.device, page_size=args.limit)
        except QtestbedError as exc:
            return _refused(exc)
        if args.json:
            print(json.dumps([_dict(j) for j in jobs], indent=2))
        else:
            for job in jobs:
                print(describe(job))
    return 0


def _attestation(device: devices_pb2.Device) -> str:
    return devices_pb2.AttestationStatus.Name(device.attestation_status).removeprefix(
        "ATTESTATION_STATUS_"
    )


def cmd_devices(args: argparse.Namespace) -> int:
    with open_client(args.profile) as client:
        try:
            devices = client.devices()
        except QtestbedError as exc:
            return _refused(exc)
        if args.json:
            print(json.dumps([_dict(d) for d in devices], indent=2))
            return 0
        print(
            f"{'DEVICE':<18}{'TIER':<12}{'QUBITS':>6}  {'ATTESTATION':<16}{'READY':<7}{'QUEUE':>5}"
        )
        for d in devices:
            ready = "yes" if d.available else "no"
            status = _attestation(d)
            print(
                f"{d.device_id:<18}{d.tier:<12}{d.num_qubits:>6}  "
                f"{status:<16}{ready:<7}{d.queue_depth:>5}"
            )
    return 0
