"""Access commands. Operator: principal list|show|set|remove, project list|set, and the device
actions state|maintenance|reserve|unschedule|schedule. Researcher: quota."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from collections.abc import Callable, Mapping
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.timestamp_pb2 import Timestamp

from qtestbed.cli.common import client_options, fail, format_time, open_client, parse_time
from qtestbed.client import Client, QtestbedError
from qtestbed.v1 import access_pb2, jobs_pb2

ROLES = ("researcher", "operator", "security")
STATES = ("online", "draining", "maintenance", "retired")

# What to do about a refusal, when the broker's own message does not already say so.
_ADVICE = {
    "ABORTED": "someone else changed it while this command ran; run the command again",
    "UNAVAILABLE": "is the broker running, and is the broker address in your profile right?",
    "DEADLINE_EXCEEDED": "the broker did not answer in time; try again",
    "UNAUTHENTICATED": "check the certificate and key named in your profile",
}
_LIST_PRINCIPALS = "see 'qtestbed principal list' for the principals on record"
_LIST_DEVICES = "see 'qtestbed device list' for the registered devices"


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; use 0 for no limit")
    return value


def _weight(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("a project's weight must be at least 1")
    return value


def register(sub: Any) -> None:
    """The operator's `principal` and `project` command groups."""
    _register_principal(sub)
    _register_project(sub)


def _register_principal(sub: Any) -> None:
    principal = sub.add_parser(
        "principal", help="operator: who may use the facility (clearance, training, quota)"
    ).add_subparsers(dest="principal_command", required=True, metavar="ACTION")
    p = principal.add_parser("list", help="every principal on record")
    client_options(p)
    p.set_defaults(handler=cmd_principal_list)
    p = principal.add_parser("show", help="one principal with every field and its version")
    p.add_argument("name", help="the common name of the principal's client certificate")
    client_options(p)
    p.set_defaults(handler=cmd_principal_show)
    p = principal.add_parser(
        "set",
        help="create a principal or change some of its fields (others are kept)",
        description="Reads the principal, applies the options and writes it back; fails if "
        "another operator changed it meanwhile. Creating one needs --tier and --role.",
    )
    p.add_argument("name", help="the common name of the principal's client certificate")
    p.add_argument("--tier", help="clearance tier (see tiers in facility.toml)")
    p.add_argument(
        "--role",
        action="append",
        choices=ROLES,
        help="a role (repeat for several); replaces the principal's roles",
    )
    p.add_argument(
        "--clearance-until",
        metavar="TIME",
        help="ISO 8601 time with zone when the clearance expires, or 'never'",
    )
    p.add_argument("--affiliation", help="institution the principal works for")
    p.add_argument("--nationality", help="for export rules")
    p.add_argument(
        "--jurisdiction",
        action="append",
        help="a jurisdiction (repeat for several); replaces the principal's jurisdictions",
    )
    p.add_argument(
        "--add-project", action="append", default=[], metavar="PROJECT", help="join a project"
    )
    p.add_argument(
        "--remove-project", action="append", default=[], metavar="PROJECT", help="leave a project"
    )
    p.add_argument(
        "--training",
        action="append",
        default=[],
        metavar="COURSE=TIME",
        help="a completed course and when it expires (ISO 8601 with zone); adds or replaces it",
    )
    p.add_argument(
        "--drop-training", action="append", default=[], metavar="COURSE", help="forget a course"
    )
    p.add_argument(
        "--add-licence", action="append", default=[], metavar="LICENCE", help="grant a licence"
    )
    p.add_argument(
        "--remove-licence", action="append", default=[], metavar="LICENCE", help="withdraw one"
    )
    p.add_argument(
        "--max-active-jobs", type=_count, metavar="N", help="jobs at once (0 = no limit)"
    )
    p.add_argument(
        "--max-shots-per-day",
        type=_count,
        metavar="N",
        help="shots in any rolling 24 hours (0 = no limit)",
    )
    client_options(p)
    p.set_defaults(handler=cmd_principal_set)
    p = principal.add_parser(
        "remove", help="remove a principal at once (their queued jobs are denied at dispatch)"
    )
    p.add_argument("name")
    client_options(p)
    p.set_defaults(handler=cmd_principal_remove)


def _register_project(sub: Any) -> None:
    project = sub.add_parser(
        "project", help="operator: projects, their share of device time and quotas"
    ).add_subparsers(dest="project_command", required=True, metavar="ACTION")
    p = project.add_parser("list", help="every project on record")
    client_options(p)
    p.set_defaults(handler=cmd_project_list)
    p = project.add_parser(
        "set", help="create a project or change some of its fields (others are kept)"
    )
    p.add_argument("name")
    p.add_argument("--description")
    p.add_argument("--weight", type=_weight, metavar="N", help="share of device time (at least 1)")
    p.add_argument(
        "--max-active-jobs", type=_count, metavar="N", help="jobs at once (0 = no limit)"
    )
    p.add_argument(
        "--max-shots-per-day",
        type=_count,
        metavar="N",
        help="shots in any rolling 24 hours (0 = no limit)",
    )
    client_options(p)
    p.set_defaults(handler=cmd_project_set)


def register_device_actions(device: Any) -> None:
    """Operating states and schedules, as further ACTIONs of the operator's `device` group."""
    p = device.add_parser(
        "state", help="set a device's operating state (draining: runs its queue, takes no more)"
    )
    p.add_argument("device_id")
    p.add_argument("state", choices=STATES)
    p.add_argument("--reason", default="", help="why (shown to operators, kept in the audit log)")
    client_options(p)
    p.set_defaults(handler=cmd_device_state)
    for name, help_text in (
        ("maintenance", "schedule a maintenance window: no jobs run on the device during it"),
        ("reserve", "reserve the device for one project's jobs during a window"),
    ):
        p = device.add_parser(name, help=help_text)
        p.add_argument("device_id")
        if name == "reserve":
            p.add_argument("--project", required=True, help="the project the device is for")
        p.add_argument(
            "--from",
            dest="starts",
            required=True,
            metavar="TIME",
            help="ISO 8601 time with zone when the window opens",
        )
        p.add_argument(
            "--until",
            dest="ends",
            required=True,
            metavar="TIME",
            help="ISO 8601 time with zone when it closes",
        )
        p.add_argument("--note", default="", help="shown next to the window")
        client_options(p)
        p.set_defaults(handler=cmd_device_window, kind=name)
    p = device.add_parser("unschedule", help="remove a maintenance window or reservation")
    p.add_argument("device_id")
    p.add_argument("window_id", help="as shown by 'qtestbed device schedule'")
    client_options(p)
    p.set_defaults(handler=cmd_device_unschedule)
    p = device.add_parser("schedule", help="operating states, maintenance windows and reservations")
    p.add_argument("device_id", nargs="?", help="only this device")
    client_options(p)
    p.set_defaults(handler=cmd_device_schedule)


def register_quota(sub: Any) -> None:
    """The researcher's `quota` command."""
    p = sub.add_parser("quota", help="your quota and your project's, with what remains")
    p.add_argument("--project", default="", help="the project (if you have several)")
    client_options(p)
    p.set_defaults(handler=cmd_quota)


# --- plumbing ----------------------------------------------------------------------------------


def _print(message: Any, as_json: bool, text: str) -> None:
    print(
        json.dumps(
            MessageToDict(
                message,
                preserving_proto_field_name=True,
                # A quota of 0 (no limit) or 0 remaining must show, not vanish from the JSON.
                always_print_fields_with_no_presence=True,
            ),
            indent=2,
        )
        if as_json
        else text
    )


def _run(
    args: argparse.Namespace,
    body: Callable[[Client], None],
    advice: Mapping[str, str] | None = None,
) -> int:
    with open_client(args.profile) as client:
        try:
            body(client)
        except QtestbedError as exc:
            hint = (advice or {}).get(exc.code) or _ADVICE.get(exc.code)
            return fail(f"{exc}; {hint}" if hint else str(exc), code=1)
    return 0


def _refuse(message: str) -> SystemExit:
    return SystemExit(fail(message))


def _limit(value: int) -> str:
    return str(value) if value else "no limit"


def _quota_text(q: access_pb2.Quota) -> str:
    return (
        f"max active jobs {_limit(q.max_active_jobs)}, "
        f"max shots per day {_limit(q.max_shots_per_day)}"
    )


def _expiry(stamp: Timestamp, now: dt.datetime) -> str:
    text = format_time(stamp)
    return text + " (EXPIRED)" if stamp.ToDatetime(dt.UTC) <= now else text


def _meta_text(meta: access_pb2.RecordMeta) -> str:
    text = f"version {meta.version}"
    if meta.updated_by:
        text += f", updated by {meta.updated_by}"
    if meta.HasField("updated_at"):
        text += f" at {format_time(meta.updated_at)}"
    return text


def _names(values: Any) -> str:
    return ", ".join(values) or "none"


# --- principals --------------------------------------------------------------------------------


def _clearance(p: access_pb2.Principal, now: dt.datetime) -> str:
    if not p.HasField("clearance_expires_at"):
        return "never expires"
    return _expiry(p.clearance_expires_at, now)


def _principal_text(record: access_pb2.PrincipalRecord) -> str:
    p, now = record.principal, dt.datetime.now(dt.UTC)
    training = [
        f"  {course}  until {_expiry(p.training[course], now)}" for course in sorted(p.training)
    ]
    lines = [
        f"name:          {p.name}",
        f"tier:          {p.tier}",
        f"roles:         {_names(p.roles)}",
        f"clearance:     {_clearance(p, now)}",
        f"affiliation:   {p.affiliation or '-'}",
        f"nationality:   {p.nationality or '-'}",
        f"jurisdictions: {_names(p.jurisdictions)}",
        f"projects:      {_names(p.projects)}",
        f"training:      {'' if training else 'none'}".rstrip(),
        *training,
        f"licences:      {_names(p.licences)}",
        f"quota:         {_quota_text(p.quota)}",
        f"record:        {_meta_text(record.meta)}",
    ]
    return "\n".join(lines)


def cmd_principal_list(args: argparse.Namespace) -> int:
    def body(c: Client) -> None:
        reply = c.call(c.access.ListPrincipals, access_pb2.ListPrincipalsRequest())
        now = dt.datetime.now(dt.UTC)
        lines = [
            f"{'NAME':<16}{'TIER':<12}{'ROLES':<30}{'CLEARANCE UNTIL':<37}{'PROJECTS':<30}VERSION"
        ]
        for record in reply.principals:
            p = record.principal
            lines.append(
                f"{p.name:<16}{p.tier:<12}{','.join(p.roles):<30}{_clearance(p, now):<37}"
                f"{','.join(p.projects) or '-':<30}{record.meta.version}"
            )
        _print(reply, args.json, "\n".join(lines) if reply.principals else "no principals")

    return _run(args, body)


def cmd_principal_show(args: argparse.Namespace) -> int:
    def body(c: Client) -> None:
        record = c.call(c.access.GetPrincipal, access_pb2.GetPrincipalRequest(name=args.name))
        _print(record, args.json, _principal_text(record))

    return _run(args, body, {"NOT_FOUND": _LIST_PRINCIPALS})


def _training(entries: list[str]) -> dict[str, Timestamp]:
    courses: dict[str, Timestamp] = {}
    for entry in entries:
        course, sep, when = entry.partition("=")
        if not sep or not course.strip() or not when.strip():
            raise _refuse(
                f"--training {entry!r}: write COURSE=TIME, e.g. "
                "dual-use-awareness=2030-01-31T00:00:00+00:00"
            )
        courses[course.strip()] = parse_time(when.strip(), f"--training {course.strip()}")
    return courses


def _changes_given(args: argparse.Namespace) -> bool:
    single = (
        args.tier,
        args.role,
        args.clearance_until,
        args.affiliation,
        args.nationality,
        args.jurisdiction,
        args.max_active_jobs,
        args.max_shots_per_day,
    )
    lists = (
        args.add_project,
        args.remove_project,
        args.training,
        args.drop_training,
        args.add_licence,
        args.remove_licence,
    )
    return any(v is not None for v in single) or any(lists)


def _replace(field: Any, values: list[str]) -> None:
    del field[:]
    field.extend(dict.fromkeys(values))


def _apply_principal(
    p: access_pb2.Principal,
    args: argparse.Namespace,
    clearance: Timestamp | None,
    training: Mapping[str, Timestamp],
) -> None:
    """Apply the options of `principal set` to `p`; exits on a removal of something absent."""
    if args.tier is not None:
        p.tier = args.tier
    if args.role is not None:
        _replace(p.roles, args.role)
    if args.clearance_until == "never":
        p.ClearField("clearance_expires_at")
    elif clearance is not None:
        p.clearance_expires_at.CopyFrom(clearance)
    if args.affiliation is not None:
        p.affiliation = args.affiliation
    if args.nationality is not None:
        p.nationality = args.nationality
    if args.jurisdiction is not None:
        _replace(p.jurisdictions, args.jurisdiction)
    _add_remove(p.projects, args.add_project, args.remove_project, p.name, "project")
    _add_remove(p.licences, args.add_licence, args.remove_licence, p.name, "licence")
    for course in args.drop_training:
        if course not in p.training:
            raise _refuse(
                f"{p.name} has no training {course!r} to drop (on record: {_names(p.training)})"
            )
        del p.training[course]
    for course, expires in training.items():
        p.training[course].CopyFrom(expires)
    if args.max_active_jobs is not None:
        p.quota.max_active_jobs = args.max_active_jobs
    if args.max_shots_per_day is not None:
        p.quota.max_shots_per_day = args.max_shots_per_day


def _add_remove(field: Any, add: list[str], remove: list[str], name: str, what: str) -> None:
    current = list(field)
    for value in remove:
        if value not in current:
            raise _refuse(f"{name} has no {what} {value!r} to remove (on record: {_names(field)})")
        current.remove(value)
    _replace(field, current + [v for v in add if v not in current])


def cmd_principal_set(args: argparse.Namespace) -> int:
    if not _changes_given(args):
        return fail("nothing to change: give at least one option (see --help)")
    # Bad times are refused before the broker is asked anything.
    clearance = None
    if args.clearance_until not in (None, "never"):
        clearance = parse_time(args.clearance_until, "--clearance-until")
    training = _training(args.training)

    def body(c: Client) -> None:
        wanted = access_pb2.GetPrincipalRequest(name=args.name)
        try:
            record: access_pb2.PrincipalRecord = c.call(c.access.GetPrincipal, wanted)
        except QtestbedError as exc:
            if exc.code != "NOT_FOUND":
                raise
            if not args.tier or not args.role:
                raise _refuse(
                    f"principal {args.name!r} does not exist; to create it give --tier and at "
                    "least one --role (or check the name with 'qtestbed principal list')"
                ) from None
            record = access_pb2.PrincipalRecord(principal=access_pb2.Principal(name=args.name))
        principal, version = record.principal, record.meta.version
        before = principal.SerializeToString(deterministic=True)
        _apply_principal(principal, args, clearance, training)
        if version and principal.SerializeToString(deterministic=True) == before:
            _print(
                record, args.json, f"principal {args.name} unchanged ({_meta_text(record.meta)})"
            )
            return
        request = access_pb2.PutPrincipalRequest(principal=principal, expected_version=version)
        stored = c.call(c.access.PutPrincipal, request)
        verb = "updated" if version else "created"
        _print(stored, args.json, f"{verb} principal {args.name}\n{_principal_text(stored)}")

    return _run(args, body)


def cmd_principal_remove(args: argparse.Namespace) -> int:
    def body(c: Client) -> None:
        reply = c.call(c.access.DeletePrincipal, access_pb2.DeletePrincipalRequest(name=args.name))
        _print(
            reply,
            args.json,
            f"removed principal {args.name}; any jobs they have queued will be denied",
        )

    return _run(args, body, {"NOT_FOUND": _LIST_PRINCIPALS})


# --- projects ----------------------------------------------------------------------------------


def _project_line(record: access_pb2.ProjectRecord) -> str:
    p = record.project
    return (
        f"{p.name:<22}{p.weight:>6}  {_limit(p.quota.max_active_jobs):<10}"
        f"{_limit(p.quota.max_shots_per_day):<14}{record.meta.version:>7}  {p.description}"
    ).rstrip()


_PROJECT_HEADER = (
    f"{'NAME':<22}{'WEIGHT':>6}  {'MAX JOBS':<10}{'MAX SHOTS/DAY':<14}VERSION  DESCRIPTION"
)


def cmd_project_list(args: argparse.Namespace) -> int:
    def body(c: Client) -> None:
        reply = c.call(c.access.ListProjects, access_pb2.ListProjectsRequest())
        lines = [_PROJECT_HEADER, *(_project_line(r) for r in reply.projects)]
        _print(reply, args.json, "\n".join(lines) if reply.projects else "no projects")

    return _run(args, body)


def cmd_project_set(args: argparse.Namespace) -> int:
    given = (args.description, args.weight, args.max_active_jobs, args.max_shots_per_day)
    if all(v is None for v in given):
        return fail("nothing to change: give at least one option (see --help)")

    def body(c: Client) -> None:
        reply = c.call(c.access.ListProjects, access_pb2.ListProjectsRequest())
        found = next((r for r in reply.projects if r.project.name == args.name), None)
        project = access_pb2.Project(name=args.name, weight=1)
        version = 0
        if found is not None:
            project.CopyFrom(found.project)
            version = found.meta.version
        if args.description is not None:
            project.description = args.description
        if args.weight is not None:
            project.weight = args.weight
        if args.max_active_jobs is not None:
            project.quota.max_active_jobs = args.max_active_jobs
        if args.max_shots_per_day is not None:
            project.quota.max_shots_per_day = args.max_shots_per_day
        request = access_pb2.PutProjectRequest(project=project, expected_version=version)
        stored = c.call(c.access.PutProject, request)
        verb = "updated" if version else "created"
        text = f"{verb} project {args.name}\n{_PROJECT_HEADER}\n{_project_line(stored)}"
        _print(stored, args.json, text)

    return _run(args, body)


# --- device operations -------------------------------------------------------------------------


def _state_name(state: access_pb2.OperatingState.ValueType) -> str:
    return access_pb2.OperatingState.Name(state).removeprefix("OPERATING_STATE_")


def _window_line(w: access_pb2.DeviceWindow) -> str:
    kind = access_pb2.WindowKind.Name(w.kind).removeprefix("WINDOW_KIND_")
    line = (
        f"  window {w.window_id}  {kind:<12}{format_time(w.starts_at)} -> {format_time(w.ends_at)}"
    )
    if w.project:
        line += f"  project {w.project}"
    if w.created_by:
        line += f"  by {w.created_by}"
    return line + (f"\n    {w.note}" if w.note else "")


def _operations_text(ops: access_pb2.DeviceOperations) -> str:
    state, effective = _state_name(ops.state), _state_name(ops.effective_state)
    line = f"{ops.device_id}: {state}"
    if effective != state:
        line += f" (now {effective})"
    if ops.reason:
        line += f" - {ops.reason}"
    ahead = sorted(ops.windows, key=lambda w: (w.starts_at.ToNanoseconds(), w.window_id))
    windows = [_window_line(w) for w in ahead] or ["  no maintenance or reservations ahead"]
    return "\n".join([line, *windows])


def cmd_device_state(args: argparse.Namespace) -> int:
    request = access_pb2.SetDeviceStateRequest(
        device_id=args.device_id,
        state=access_pb2.OperatingState.Value(f"OPERATING_STATE_{args.state.upper()}"),
        reason=args.reason,
    )

    def body(c: Client) -> None:
        ops = c.call(c.access.SetDeviceState, request)
        _print(ops, args.json, _operations_text(ops))

    return _run(args, body, {"NOT_FOUND": _LIST_DEVICES})


def cmd_device_window(args: argparse.Namespace) -> int:
    reservation = args.kind == "reserve"
    request = access_pb2.AddDeviceWindowRequest(
        device_id=args.device_id,
        kind=access_pb2.WINDOW_KIND_RESERVATION
        if reservation
        else access_pb2.WINDOW_KIND_MAINTENANCE,
        starts_at=parse_time(args.starts, "--from"),
        ends_at=parse_time(args.ends, "--until"),
        project=args.project if reservation else "",
        note=args.note,
    )

    def body(c: Client) -> None:
        ops = c.call(c.access.AddDeviceWindow, request)
        added = [
            w
            for w in ops.windows
            if (w.kind, w.starts_at, w.ends_at, w.project, w.note)
            == (request.kind, request.starts_at, request.ends_at, request.project, request.note)
        ]
        what = "reservation" if reservation else "maintenance window"
        head = f"added {what} {added[-1].window_id}" if added else f"added {what}"
        _print(ops, args.json, f"{head}\n{_operations_text(ops)}")

    return _run(args, body, {"NOT_FOUND": _LIST_DEVICES})


def cmd_device_unschedule(args: argparse.Namespace) -> int:
    request = access_pb2.RemoveDeviceWindowRequest(
        device_id=args.device_id, window_id=args.window_id
    )

    def body(c: Client) -> None:
        ops = c.call(c.access.RemoveDeviceWindow, request)
        _print(ops, args.json, f"removed window {args.window_id}\n{_operations_text(ops)}")

    advice = {"NOT_FOUND": f"see 'qtestbed device schedule {args.device_id}' for its windows"}
    return _run(args, body, advice)


def cmd_device_schedule(args: argparse.Namespace) -> int:
    def body(c: Client) -> None:
        reply = c.call(c.access.ListDeviceOperations, access_pb2.ListDeviceOperationsRequest())
        if args.device_id:
            chosen = [d for d in reply.devices if d.device_id == args.device_id]
            if not chosen:
                raise _refuse(f"device {args.device_id!r} is not registered; {_LIST_DEVICES}")
            del reply.devices[:]
            reply.devices.extend(chosen)
        text = "\n".join(_operations_text(d) for d in reply.devices)
        _print(reply, args.json, text or "no devices registered")

    return _run(args, body)


# --- researcher --------------------------------------------------------------------------------


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


def cmd_quota(args: argparse.Namespace) -> int:
    def body(c: Client) -> None:
        reply = jobs_pb2.GetQuotaResponse(quotas=c.quota(args.project))
        _print(reply, args.json, "\n".join(_usage_text(q) for q in reply.quotas))

    advice = {
        "NOT_FOUND": "name one of your own projects with --project",
        "PERMISSION_DENIED": "quotas apply to researchers; use a researcher's profile",
    }
    return _run(args, body, advice)
