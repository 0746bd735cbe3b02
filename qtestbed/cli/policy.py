"""`qtestbed policy check | test | explain`: validate, test and explain the Cedar policy set.

Exit status: 0 valid / all cases pass / allowed; 1 invalid / a case failed / denied; 2 the
command could not run (unreadable file, malformed attributes).

`explain` takes the principal's and device's attributes as JSON files today (the JSON form of
broker/policy/attributes.py). The broker-backed `--principal P --device D` form only needs to
build the same `PolicyRequest` from the registries instead of `_request`, then call
`PolicyEngine.explain`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtestbed.cli.errors import CommandError, guarded
from qtestbed.cli.output import print_json
from qtestbed.cli.runner import using_client
from qtestbed.client import Client
from qtestbed.v1 import admin_pb2

if TYPE_CHECKING:
    from broker.policy import PolicyRequest

# The policy actions (broker.policy.Action), spelled out so that building the parser does not
# load the policy engine; tests/e2e/test_cli_imports.py fails if the two lists drift apart.
ACTIONS = ("SubmitJob", "DispatchJob", "ViewDevice")


def register(sub: Any) -> None:
    policy = sub.add_parser("policy", help="operators: validate, test and explain access policy")
    commands = policy.add_subparsers(dest="policy_command", required=True, metavar="ACTION")

    check = commands.add_parser("check", help="validate the policy set against the schema")
    _files(check)
    check.set_defaults(handler=cmd_check)

    test = commands.add_parser("test", help="run a corpus of request/decision/reason cases")
    test.add_argument("cases", type=Path, help="corpus JSON (see broker/policy/corpus.py)")
    _files(test, default_note="the files the corpus names, else the shipped ones")
    test.set_defaults(handler=cmd_test)

    explain = commands.add_parser("explain", help="show a decision and every requirement")
    _files(explain)
    live = explain.add_argument_group(
        "live", "ask the running broker about a registered principal and device (operator role)"
    )
    live.add_argument("--principal", help="principal name, as in the facility file")
    live.add_argument("--device", help="device id")
    live.add_argument("--project", default="", help="project of the job (default: their first)")
    live.add_argument("--profile", type=Path, help="client profile (or set QTESTBED_PROFILE)")
    explain.add_argument("--principal-json", type=Path, help="principal attributes (JSON object)")
    explain.add_argument("--device-json", type=Path, help="device attributes (JSON object)")
    explain.add_argument(
        "--job-json",
        type=Path,
        help="job attributes (JSON object); default: the principal's only project, no shots",
    )
    explain.add_argument(
        "--action",
        choices=ACTIONS,
        default="SubmitJob",
        help="what the principal asks to do (default SubmitJob)",
    )
    explain.add_argument(
        "--attestation", default="affirming", help="device attestation status (default affirming)"
    )
    explain.add_argument(
        "--now", help="decision time, epoch seconds or ISO 8601 with zone (default: now)"
    )
    explain.add_argument("--json", action="store_true", help="print the explanation as JSON")
    explain.set_defaults(handler=cmd_explain)


def _files(p: argparse.ArgumentParser, default_note: str = "the shipped default") -> None:
    p.add_argument("--policies", type=Path, help=f"Cedar policy file (default: {default_note})")
    p.add_argument("--schema", type=Path, help=f"Cedar schema file (default: {default_note})")


@guarded()
def cmd_check(args: argparse.Namespace) -> int:
    from broker.policy import PolicyEngine, PolicyError

    try:
        engine = PolicyEngine.load_files(args.policies, args.schema)
    except PolicyError as exc:
        print(f"INVALID: {len(exc.errors)} problem(s)")
        for error in exc.errors:
            print(f"  {error}")
        return 1
    ids = sorted(p.policy_id for p in engine.policies.values())
    print(f"OK: {len(ids)} policies valid against the schema: {', '.join(ids)}")
    return 0


@guarded()
def cmd_test(args: argparse.Namespace) -> int:
    from broker.policy import PolicyEngine, PolicyError
    from broker.policy.corpus import CorpusError, load_corpus, run_corpus, summary

    try:
        corpus = load_corpus(args.cases)
        engine = PolicyEngine.load_files(
            args.policies or corpus.policies, args.schema or corpus.schema
        )
    except (CorpusError, PolicyError) as exc:
        raise CommandError(f"cannot run the corpus: {exc}") from exc
    results = run_corpus(engine, corpus.cases)
    print(summary(results))
    return 0 if all(r.passed for r in results) else 1


@guarded()
def cmd_explain(args: argparse.Namespace) -> int:
    if args.principal or args.device:
        return _explain_live(args)  # the broker decides; nothing of it is loaded here
    if args.principal_json is None or args.device_json is None:
        raise CommandError(
            "give --principal and --device (live), or --principal-json and --device-json"
        )
    from broker.policy import AttributesError, PolicyEngine, PolicyError

    try:
        engine = PolicyEngine.load_files(args.policies, args.schema)
        request = _request(args)
    except PolicyError as exc:
        raise CommandError(str(exc)) from exc
    except (AttributesError, OSError, json.JSONDecodeError) as exc:
        raise CommandError(f"cannot build the request: {exc}") from exc
    explanation = engine.explain(request)
    if args.json:
        print_json(explanation.to_dict())
    else:
        print(explanation.render())
    return 0 if explanation.allowed else 1


def _request(args: argparse.Namespace) -> PolicyRequest:
    from broker.policy import (
        Action,
        AttributesError,
        DeviceAttributes,
        Environment,
        JobAttributes,
        PolicyRequest,
        PrincipalAttributes,
    )

    principal = PrincipalAttributes.from_json(_read_json(args.principal_json))
    device = DeviceAttributes.from_json(_read_json(args.device_json))
    action = Action(args.action)
    job = None
    if action is not Action.VIEW_DEVICE:
        if args.job_json:
            job = JobAttributes.from_json(_read_json(args.job_json))
        elif len(principal.projects) == 1:
            job = JobAttributes(project=next(iter(principal.projects)))
        else:
            raise AttributesError("give --job-json: the principal is not in exactly one project")
    now = int(time.time()) if args.now is None else args.now
    env = Environment.from_json({"now": _epoch_or_iso(now), "attestation": args.attestation})
    return PolicyRequest(
        principal=principal, device=device, action=action, environment=env, job=job
    )


def _epoch_or_iso(value: int | str) -> int | str:
    return int(value) if isinstance(value, str) and value.isdigit() else value


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _explain_live(args: argparse.Namespace) -> int:
    if not (args.principal and args.device):
        raise CommandError("--principal and --device go together")
    request = admin_pb2.ExplainAccessRequest(
        principal=args.principal, device_id=args.device, action=args.action, project=args.project
    )
    return using_client(args, lambda client: _print_explained(args, client, request))


def _print_explained(
    args: argparse.Namespace, client: Client, request: admin_pb2.ExplainAccessRequest
) -> int:
    reply = client.call(client.admin.ExplainAccess, request)
    if args.json:
        print_json(reply)
    else:
        decision = "ALLOW" if reply.allowed else "DENY"
        print(f"decision: {decision} ({', '.join(reply.policy_ids)})")
        for reason in reply.reasons:
            print(f"  because: {reason}")
        for requirement in reply.requirements:
            mark = "met" if requirement.met else "NOT met"
            print(f"  [{mark}] {requirement.rule_id}: {requirement.text}")
    return 0 if reply.allowed else 1
