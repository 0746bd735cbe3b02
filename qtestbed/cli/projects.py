"""The operator's `project list|set`: projects, their share of device time and their quotas."""

from __future__ import annotations

import argparse
from typing import Any

from qtestbed.cli.common import client_options, format_time, limit_count
from qtestbed.cli.errors import CommandError, guarded
from qtestbed.cli.output import show
from qtestbed.cli.runner import broker_command, using_client
from qtestbed.client import Client
from qtestbed.v1 import access_pb2


def register(sub: Any) -> None:
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
    p.add_argument("--weight", type=int, metavar="N", help="share of device time (at least 1)")
    p.add_argument(
        "--max-active-jobs", type=limit_count, metavar="N", help="jobs at once (0 = no limit)"
    )
    p.add_argument(
        "--max-shots-per-day",
        type=limit_count,
        metavar="N",
        help="shots in any rolling 24 hours (0 = no limit)",
    )
    client_options(p)
    p.set_defaults(handler=cmd_project_set)


def limit_text(value: int) -> str:
    """A quota limit as people read it: 0 means there is none."""
    return str(value) if value else "no limit"


def meta_text(meta: access_pb2.RecordMeta) -> str:
    """An access record's version and who last changed it, when."""
    text = f"version {meta.version}"
    if meta.updated_by:
        text += f", updated by {meta.updated_by}"
    if meta.HasField("updated_at"):
        text += f" at {format_time(meta.updated_at)}"
    return text


def _project_line(record: access_pb2.ProjectRecord) -> str:
    p = record.project
    return (
        f"{p.name:<22}{p.weight:>6}  {limit_text(p.quota.max_active_jobs):<10}"
        f"{limit_text(p.quota.max_shots_per_day):<14}{record.meta.version:>7}  {p.description}"
    ).rstrip()


_PROJECT_HEADER = (
    f"{'NAME':<22}{'WEIGHT':>6}  {'MAX JOBS':<10}{'MAX SHOTS/DAY':<14}VERSION  DESCRIPTION"
)


@broker_command()
def cmd_project_list(args: argparse.Namespace, c: Client) -> int:
    reply = c.call(c.access.ListProjects, access_pb2.ListProjectsRequest())
    lines = [_PROJECT_HEADER, *(_project_line(r) for r in reply.projects)]
    show(reply, as_json=args.json, text="\n".join(lines) if reply.projects else "no projects")
    return 0


@guarded()
def cmd_project_set(args: argparse.Namespace) -> int:
    given = (args.description, args.weight, args.max_active_jobs, args.max_shots_per_day)
    if all(v is None for v in given):
        raise CommandError("nothing to change: give at least one option (see --help)")
    return using_client(args, lambda c: _set_project(args, c))


def _set_project(args: argparse.Namespace, c: Client) -> int:
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
    show(stored, as_json=args.json, text=text)
    return 0
