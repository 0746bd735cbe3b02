"""What `qtestbed principal set` changes: its options, and applying them to a principal as
read from the broker (so that fields not named are kept)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from qtestbed.cli.common import limit_count, parse_time
from qtestbed.cli.errors import CommandError
from qtestbed.v1 import access_pb2

ROLES = ("researcher", "operator", "security")


def add_options(p: argparse.ArgumentParser) -> None:
    """The options of `principal set`: each names one change; fields not named are kept."""
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
    _add_list_options(p)
    p.add_argument(
        "--max-active-jobs", type=limit_count, metavar="N", help="jobs at once (0 = no limit)"
    )
    p.add_argument(
        "--max-shots-per-day",
        type=limit_count,
        metavar="N",
        help="shots in any rolling 24 hours (0 = no limit)",
    )


def _add_list_options(p: argparse.ArgumentParser) -> None:
    """Options that add to or remove from one of the principal's lists; each repeatable."""
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


def names(values: Any) -> str:
    return ", ".join(values) or "none"


def training(entries: list[str]) -> dict[str, Timestamp]:
    courses: dict[str, Timestamp] = {}
    for entry in entries:
        course, sep, when = entry.partition("=")
        if not sep or not course.strip() or not when.strip():
            raise CommandError(
                f"--training {entry!r}: write COURSE=TIME, e.g. "
                "dual-use-awareness=2030-01-31T00:00:00+00:00"
            )
        courses[course.strip()] = parse_time(when.strip(), f"--training {course.strip()}")
    return courses


def given(args: argparse.Namespace) -> bool:
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


def apply(
    p: access_pb2.Principal,
    args: argparse.Namespace,
    clearance: Timestamp | None,
    training: Mapping[str, Timestamp],
) -> None:
    """Apply the options of `principal set` to `p`; a CommandError for removing something absent."""
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
            raise CommandError(
                f"{p.name} has no training {course!r} to drop (on record: {names(p.training)})"
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
            raise CommandError(
                f"{name} has no {what} {value!r} to remove (on record: {names(field)})"
            )
        current.remove(value)
    _replace(field, current + [v for v in add if v not in current])
