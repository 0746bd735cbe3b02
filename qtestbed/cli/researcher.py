"""Researcher commands: submit, status, result, cancel, jobs, devices, quota (each with --json)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from attestation.audit_inclusion import InclusionProof
from attestation.shot_memory import ShotMemoryError
from qtestbed.cli.common import client_options, format_time, read_input
from qtestbed.cli.errors import guarded
from qtestbed.cli.output import message_dict, print_json, show
from qtestbed.cli.runner import broker_command, using_client
from qtestbed.client import Client, QtestbedError, bundle_of, memory_of
from qtestbed.v1 import devices_pb2, jobs_pb2


def register(sub: Any) -> None:
    _register_submit(sub)
    _register_job_commands(sub)
    p = sub.add_parser("devices", help="list the devices you may use")
    client_options(p)
    p.set_defaults(handler=cmd_devices)
    _register_quota(sub)


def _register_submit(sub: Any) -> None:
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
    p.add_argument(
        "--memory",
        action="store_true",
        help="also record every shot's outcome in shot order (bound by the receipt; "
        "`qtestbed result` shows it)",
    )
    chooser = p.add_argument_group("device selection, instead of --device")
    chooser.add_argument("--min-qubits", type=int, default=0)
    chooser.add_argument("--basis-gate", action="append", default=[], help="repeatable")
    chooser.add_argument("--tier", default="", help="only devices of this tier")
    chooser.add_argument("--max-two-qubit-error", type=float, default=0.0)
    client_options(p)
    p.set_defaults(handler=cmd_submit)


def _register_job_commands(sub: Any) -> None:
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
            p.add_argument(
                "--executed-circuit",
                type=Path,
                help="write the circuit the device ran (OpenQASM 3) when it translated yours",
            )
        client_options(p)
        p.set_defaults(handler=handler)
    p = sub.add_parser("jobs", help="list your jobs, newest first")
    p.add_argument("--device", default="", help="only jobs for this device")
    p.add_argument("--limit", type=int, default=20)
    client_options(p)
    p.set_defaults(handler=cmd_jobs)


def _register_quota(sub: Any) -> None:
    p = sub.add_parser("quota", help="your quota and your project's, with what remains")
    p.add_argument("--project", default="", help="the project (if you have several)")
    client_options(p)
    p.set_defaults(handler=cmd_quota)


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


@guarded()
def cmd_submit(args: argparse.Namespace) -> int:
    payload = read_input(args.file)  # before the profile: a typo in the file name comes first
    return using_client(args, lambda client: _submit(args, client, payload))


def _submit(args: argparse.Namespace, client: Client, payload: bytes) -> int:
    job = client.submit(
        payload,
        device_id=args.device,
        shots=args.shots,
        fmt=args.format,
        idempotency_key=args.idempotency_key,
        project=args.project,
        priority=_PRIORITIES[args.priority],
        selector=_selector(args),
        session_id=args.session,
        memory=args.memory,
    ).job
    if args.wait:
        for update in client.watch(job.job_id):
            job = update
            if not args.json:
                print(describe(job), file=sys.stderr, flush=True)
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


@broker_command()
def cmd_watch(args: argparse.Namespace, client: Client) -> int:
    job = client.get_job(args.job_id)
    for update in client.watch(args.job_id):
        job = update
        if args.json:
            print_json(job, stream=True)
        else:
            print(describe(job), flush=True)
    return 0 if _state(job) == "COMPLETED" else 1


def _print_job(client: Client, job: jobs_pb2.Job, as_json: bool, *, with_result: bool) -> int:
    result = None
    if with_result and _state(job) == "COMPLETED":
        result = client.result(job.job_id)
    if as_json:
        out: dict[str, object] = {"job": job}
        if result is not None:
            out["result"] = {
                "counts": dict(result.counts),
                "receipt_problems": client.verify_result(result, job),
            }
        print_json(out)
    else:
        print(describe(job))
        if result is not None:
            _print_counts(result)
    return 0 if _state(job) in {"COMPLETED", "QUEUED", "DISPATCHED", "RUNNING"} else 1


def _print_counts(result: jobs_pb2.JobResult) -> None:
    for bits, count in sorted(result.counts.items(), key=lambda kv: -kv[1]):
        print(f"  {bits}  {count}")


@broker_command()
def cmd_status(args: argparse.Namespace, client: Client) -> int:
    job = client.get_job(args.job_id)
    show(job, as_json=args.json, text=describe(job))
    return 0


@broker_command()
def cmd_result(args: argparse.Namespace, client: Client) -> int:
    job = client.get_job(args.job_id)
    result = client.result(args.job_id)
    problems = client.verify_result(result, job)
    if args.save is not None:
        args.save.write_text(bundle_of(result, job, _audit_proof(client, job.job_id)).to_json())
    if args.executed_circuit is not None and result.executed_circuit:
        args.executed_circuit.write_bytes(result.executed_circuit)
    if args.json:
        body = message_dict(result)
        # The receipt and certificate are for `--save` and `receipt verify`, not for reading.
        body.pop("receipt", None)
        body.pop("device_certificate", None)
        body.pop("memory_width", None)
        body["memory"] = _memory_bitstrings(result)  # per shot, in shot order; [] without
        print_json({**body, "receipt_valid": not problems, "receipt_problems": problems})
    else:
        print(f"{job.job_id} on {result.device_id}: {result.execution_seconds:.3f}s")
        _print_counts(result)
        print(_executed_note(result, args.executed_circuit))
        shots = _memory_bitstrings(result)
        if shots:
            print(f"memory ({len(shots)} shots, in shot order): " + " ".join(shots))
        verdict = "valid (signed by the attested device)"
        print("receipt: " + (verdict if not problems else "INVALID: " + "; ".join(problems)))
    return 0 if not problems else 3


def _executed_note(result: jobs_pb2.JobResult, saved_to: Path | None) -> str:
    if not result.executed_circuit:
        return "executed: exactly as submitted"
    where = f"saved to {saved_to}" if saved_to else "--executed-circuit PATH saves it"
    return f"executed: translated by the device at optimisation level 0 ({where})"


def _memory_bitstrings(result: jobs_pb2.JobResult) -> list[str]:
    """Each shot's outcome (clbit 0 rightmost), or [] when the job asked for no memory or the
    memory is malformed (the receipt check then names the problem)."""
    try:
        memory = memory_of(result)
    except ShotMemoryError:
        return []
    return memory.bitstrings() if memory is not None else []


def _audit_proof(client: Client, job_id: str) -> InclusionProof | None:
    """The bundle's audit inclusion proof; a bundle without one still holds the receipt."""
    try:
        proof = client.result_proof(job_id)
    except QtestbedError as exc:
        print(
            f"warning: saved without an audit inclusion proof ({exc.code}: {exc.message})",
            file=sys.stderr,
        )
        return None
    if proof.witnessed:
        note = f"witnessed: {len(proof.cosignatures)} witness cosignature(s) on its checkpoint"
    else:
        note = (
            "unwitnessed: no witness has cosigned a checkpoint covering this result yet; run "
            "`qtestbed result --save` again later to replace it with a witnessed proof"
        )
    print(f"audit proof (tree size {proof.tree_size}) {note}", file=sys.stderr)
    return proof


@broker_command()
def cmd_cancel(args: argparse.Namespace, client: Client) -> int:
    job = client.cancel(args.job_id)
    show(job, as_json=args.json, text=describe(job))
    return 0


@broker_command()
def cmd_jobs(args: argparse.Namespace, client: Client) -> int:
    jobs = client.list_jobs(device_id=args.device, page_size=args.limit)
    if args.json:
        print_json(jobs)
        return 0
    for job in jobs:  # one line each, and nothing at all when there are none
        print(describe(job))
    return 0


def _attestation(device: devices_pb2.Device) -> str:
    return devices_pb2.AttestationStatus.Name(device.attestation_status).removeprefix(
        "ATTESTATION_STATUS_"
    )


@broker_command()
def cmd_devices(args: argparse.Namespace, client: Client) -> int:
    devices = client.devices()
    lines = [
        f"{'DEVICE':<18}{'TIER':<12}{'QUBITS':>6}  {'ATTESTATION':<16}{'READY':<7}{'QUEUE':>5}"
    ]
    for d in devices:
        ready = "yes" if d.available else "no"
        lines.append(
            f"{d.device_id:<18}{d.tier:<12}{d.num_qubits:>6}  "
            f"{_attestation(d):<16}{ready:<7}{d.queue_depth:>5}"
        )
    show(devices, as_json=args.json, text="\n".join(lines))
    return 0


def _usage_text(q: jobs_pb2.QuotaUsage) -> str:
    if q.max_active_jobs:
        jobs = f"{q.active_jobs} of {q.max_active_jobs} in use, {q.remaining_active_jobs} remaining"
    else:
        jobs = f"{q.active_jobs} in use, no limit"
    if q.max_shots_per_day:
        shots = f"{q.shots_last_day} of {q.max_shots_per_day} used, {q.remaining_shots} remaining"
    else:
        shots = f"{q.shots_last_day} used, no limit"
    return (
        f"{q.scope} {q.name}\n  active jobs:             {jobs}\n  shots (last 24 hours):   {shots}"
    )


@broker_command(
    {
        "NOT_FOUND": "name one of your own projects with --project",
        "PERMISSION_DENIED": "quotas apply to researchers; use a researcher's profile",
    }
)
def cmd_quota(args: argparse.Namespace, client: Client) -> int:
    reply = jobs_pb2.GetQuotaResponse(quotas=client.quota(args.project))
    show(reply, as_json=args.json, text="\n".join(_usage_text(q) for q in reply.quotas))
    return 0
