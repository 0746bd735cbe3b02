"""Policy test corpus: request/decision/reason cases, modelled on Cedar's own test corpus.

Cedar's corpus gives, per test, the policies, entities, schema and a list of requests each with
the expected decision, reasons (determining policy ids) and errors. Ours is one JSON file:

    {
      "description": "...",
      "policies": "../default.cedar",          # optional, relative to this file
      "schema": "../schema.cedarschema",        # optional, relative to this file
      "defaults": {"principal": {...}, "device": {...}, "job": {...}, "environment": {...}},
      "cases": [
        {"desc": "tier equal to the device's", "action": "SubmitJob",
         "principal": {"tier": "restricted", "tier_rank": 1},   # merged over the defaults
         "decision": "allow", "policy_ids": ["researcher-submit"],
         "reason": "substring of one of the reasons", "errors": []}
      ]
    }

Attributes use the JSON form of broker/policy/attributes.py (times as epoch seconds or ISO 8601).
A case's principal/device/job/environment objects override the defaults field by field, so each
case shows only the edge it tests. `policy_ids` must match exactly (order ignored); `reason`, if
given, must be a substring of one reason; `errors` defaults to none expected.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.policy.attributes import (
    Action,
    AttributesError,
    DeviceAttributes,
    Environment,
    JobAttributes,
    PolicyRequest,
    PrincipalAttributes,
)
from broker.policy.engine import PolicyDecision, PolicyEngine

SHIPPED_CORPUS = Path(__file__).resolve().parent / "corpus" / "default_cases.json"


class CorpusError(ValueError):
    """The corpus file is malformed; the message names the case and field."""


@dataclass(frozen=True, kw_only=True, slots=True)
class CorpusCase:
    """One request and what the policy set must answer."""

    desc: str
    request: PolicyRequest
    allowed: bool
    policy_ids: frozenset[str]
    reason: str = ""
    errors: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class Corpus:
    """Cases plus the policy and schema files the corpus names, if any."""

    cases: tuple[CorpusCase, ...]
    policies: Path | None = None
    schema: Path | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class CaseResult:
    """A case, what the engine decided, and every way the two differ (empty when it passed)."""

    case: CorpusCase
    decision: PolicyDecision
    failures: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.failures


def load_corpus(path: Path) -> Corpus:
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CorpusError(f"cannot read corpus {path}: {exc}") from exc
    if not isinstance(raw, Mapping) or not isinstance(raw.get("cases"), list):
        raise CorpusError(f"{path}: expected an object with a list of cases")
    base = path.resolve().parent
    defaults = raw.get("defaults", {})
    cases = tuple(
        parse_case(c, defaults, f"{path.name} case {i}") for i, c in enumerate(raw["cases"])
    )
    return Corpus(
        cases=cases,
        policies=base / raw["policies"] if raw.get("policies") else None,
        schema=base / raw["schema"] if raw.get("schema") else None,
    )


def parse_case(raw: Mapping[str, Any], defaults: Mapping[str, Any], where: str) -> CorpusCase:
    where = f"{where} ({raw.get('desc', 'no desc')})"
    try:
        action = Action(raw["action"])
        decision = raw["decision"]
        if decision not in ("allow", "deny"):
            raise CorpusError(f"{where}: decision must be 'allow' or 'deny'")
        job = None
        if action is not Action.VIEW_DEVICE:
            job = JobAttributes.from_json(_merged("job", raw, defaults))
        request = PolicyRequest(
            principal=PrincipalAttributes.from_json(_merged("principal", raw, defaults)),
            device=DeviceAttributes.from_json(_merged("device", raw, defaults)),
            action=action,
            environment=Environment.from_json(_merged("environment", raw, defaults)),
            job=job,
        )
        return CorpusCase(
            desc=str(raw.get("desc", where)),
            request=request,
            allowed=decision == "allow",
            policy_ids=frozenset(raw["policy_ids"]),
            reason=str(raw.get("reason", "")),
            errors=tuple(raw.get("errors", ())),
        )
    except (KeyError, ValueError, AttributesError, TypeError) as exc:
        raise CorpusError(f"{where}: {exc!r}") from exc


def _merged(key: str, raw: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    return {**defaults.get(key, {}), **raw.get(key, {})}


def run_corpus(engine: PolicyEngine, cases: Iterable[CorpusCase]) -> list[CaseResult]:
    results = []
    for case in cases:
        decision = engine.decide(case.request)
        results.append(CaseResult(case=case, decision=decision, failures=_compare(case, decision)))
    return results


def _compare(case: CorpusCase, decision: PolicyDecision) -> tuple[str, ...]:
    failures = []
    if decision.allowed != case.allowed:
        got, want = _word(decision.allowed), _word(case.allowed)
        failures.append(f"decision {got}, expected {want}")
    if frozenset(decision.policy_ids) != case.policy_ids:
        failures.append(
            f"policy ids {sorted(decision.policy_ids)}, expected {sorted(case.policy_ids)}"
        )
    if case.reason and not any(case.reason in r for r in decision.reasons):
        failures.append(f"no reason contains {case.reason!r}; reasons: {list(decision.reasons)}")
    if tuple(decision.errors) != case.errors:
        failures.append(f"errors {list(decision.errors)}, expected {list(case.errors)}")
    return tuple(failures)


def _word(allowed: bool) -> str:
    return "allow" if allowed else "deny"


def summary(results: list[CaseResult]) -> str:
    """One line per failed case, then the totals."""
    lines = []
    for result in results:
        if not result.passed:
            lines.append(f"FAIL {result.case.desc}: " + "; ".join(result.failures))
    passed = sum(r.passed for r in results)
    lines.append(f"{passed}/{len(results)} cases passed")
    return "\n".join(lines)
