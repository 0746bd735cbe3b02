"""The policy decision point: Cedar policies validated against a schema, decisions with reasons.

`PolicyEngine.load` refuses a policy set that does not parse, does not validate against the
schema, or lacks the annotations every decision needs (`@id`, `@reason`, and one `@requireN`
per permit condition); the error lists every problem, so a refused reload keeps the old engine.

A decision names the policies that made it. For an allow or a forbid these are Cedar's
`diagnostics.reason` mapped through `@id`. A default deny (no permit matched, no forbid) has no
determining policy in Cedar, so the engine asks which requirements of the nearest permit were
not met (see broker/policy/explain.py) and names them `<permit id>/<requirement>`, e.g.
`researcher-submit/training`, with their rendered `@requireN` texts as reasons.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cedarpy

from broker.policy.attributes import PolicyRequest
from broker.policy.explain import Explanation, PolicyInfo, Probes, Requirement
from broker.policy.second_cache import SecondCache
from broker.policy.translate import render, to_cedar

HERE = Path(__file__).resolve().parent
DEFAULT_POLICIES = HERE / "default.cedar"
DEFAULT_SCHEMA = HERE / "schema.cedarschema"
DEFAULT_DENY_ID = "default-deny"
_ENTITY_CACHE_SIZE = 4096
_DECISION_CACHE_SIZE = 8192
_VERDICT_CACHE_SIZE = 8192


class PolicyError(ValueError):
    """A policy set was refused; `errors` lists every problem found."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("policy set refused:\n  " + "\n  ".join(errors))
        self.errors = tuple(errors)


@dataclass(frozen=True, kw_only=True, slots=True)
class PolicyDecision:
    """Allow or deny, the rule ids that decided it, what to do about it, evaluation errors."""

    allowed: bool
    policy_ids: tuple[str, ...]
    reasons: tuple[str, ...]
    errors: tuple[str, ...] = ()

    @property
    def rule_id(self) -> str:
        """The single id to put on PERMISSION_DENIED and the audit entry."""
        return self.policy_ids[0] if self.policy_ids else DEFAULT_DENY_ID


@dataclass(frozen=True, kw_only=True, slots=True)
class Verdict:
    """Allow or deny and nothing else: the answer to a question whose reasons nobody is told."""

    allowed: bool
    errors: tuple[str, ...] = ()


class PolicyEngine:
    """An immutable, validated policy set; build a new one to reload."""

    def __init__(
        self, *, policies: cedarpy.PolicySet, schema: cedarpy.Schema, info: Mapping[str, PolicyInfo]
    ) -> None:
        self._policies = policies
        self._schema = schema
        self._info = dict(info)
        self._probes = Probes(self._info, schema)
        # Parsed, schema-validated entity sets by their exact JSON: the same principal and
        # device recur on every submit and dispatch, and parsing is over half a decision's cost.
        # Any attribute change gives a new key, so a cached handle is never stale.
        self._entities: dict[str, cedarpy.Entities] = {}
        # Decisions by the whole request (attributes, action, job, environment with `now` in
        # whole seconds). A decision is a pure function of the policy set and the request, so a
        # repeat within the same second is answered without Cedar; a reload builds a new engine.
        # Only the current seconds are kept: no later request can ask an earlier second's.
        self._decisions: SecondCache[str, PolicyDecision] = SecondCache(_DECISION_CACHE_SIZE)
        # Verdicts by a digest of the whole request, filled by `verdict` alone (see there).
        self._verdicts: SecondCache[bytes, Verdict] = SecondCache(_VERDICT_CACHE_SIZE)

    @classmethod
    def load(cls, policy_text: str, schema_text: str) -> PolicyEngine:
        errors: list[str] = []
        try:
            schema = cedarpy.Schema.from_str(schema_text)
        except ValueError as exc:
            raise PolicyError([f"schema: {exc}"]) from exc
        try:
            as_json = json.loads(cedarpy.policies_to_json_str(policy_text))
            policies = cedarpy.PolicySet.from_str(policy_text)
        except ValueError as exc:
            raise PolicyError([f"syntax: {exc}"]) from exc
        result = cedarpy.validate_policies(policy_text, schema)
        errors += [f"schema violation: {e}" for e in result.errors]
        info, annotation_errors = _policy_info(as_json)
        errors += annotation_errors
        if errors:
            raise PolicyError(errors)
        return cls(policies=policies, schema=schema, info=info)

    @classmethod
    def load_files(
        cls, policy_path: Path | None = None, schema_path: Path | None = None
    ) -> PolicyEngine:
        """Read and load policy and schema files; the defaults are the shipped ones."""
        policy_path = policy_path or DEFAULT_POLICIES
        schema_path = schema_path or DEFAULT_SCHEMA
        try:
            policy_text, schema_text = policy_path.read_text(), schema_path.read_text()
        except OSError as exc:
            raise PolicyError([f"cannot read: {exc}"]) from exc
        return cls.load(policy_text, schema_text)

    @property
    def policies(self) -> Mapping[str, PolicyInfo]:
        """Every policy by its @id."""
        return {p.policy_id: p for p in self._info.values()}

    def _parsed(self, entities: list[dict[str, Any]]) -> cedarpy.Entities | list[dict[str, Any]]:
        key = json.dumps(entities, sort_keys=True, separators=(",", ":"))
        handle = self._entities.get(key)
        if handle is None:
            try:
                handle = cedarpy.Entities.from_json_str(key, self._schema)
            except ValueError:
                return entities  # let is_authorized report the problem as a diagnostic
            if len(self._entities) >= _ENTITY_CACHE_SIZE:
                self._entities.clear()
            self._entities[key] = handle
        return handle

    def decide(self, request: PolicyRequest) -> PolicyDecision:
        key, second = repr(request), request.environment.now
        decision = self._decisions.get(second, key)
        if decision is None:
            decision = self.evaluate(request)
            self._decisions.put(second, key, decision)
        return decision

    def verdict(self, request: PolicyRequest) -> Verdict:
        """Allow or deny at one cost whatever the answer: for lookups by id, where a hidden
        object and an absent one (decided against a stand-in) must do the same work.

        No reasons: a default deny would otherwise run the per-requirement probes, which an
        allow or a forbid does not. A cache of its own, which nothing but `verdict` fills and
        whose key is the whole request (a stand-in carries the id asked for): `decide`'s cache
        and the parsed entity sets are filled by other calls too (ListDevices decides every
        device), so through them a hidden device would be answered from memory and a stand-in
        by Cedar. Here a request is cached exactly when the same question was asked before,
        whether or not its object exists. The key is a digest, so an attacker's long ids cost
        no memory; the cache is cleared when full, for every entry at once.
        """
        key = hashlib.blake2b(repr(request).encode(), digest_size=16).digest()
        second = request.environment.now
        verdict = self._verdicts.get(second, key)
        if verdict is None:
            cedar_request, entities = to_cedar(request)
            result = cedarpy.is_authorized(cedar_request, self._policies, entities, self._schema)
            verdict = Verdict(
                allowed=result.decision == cedarpy.Decision.Allow,
                errors=tuple(str(e) for e in result.diagnostics.errors),
            )
            self._verdicts.put(second, key, verdict)
        return verdict

    @property
    def cached_answers(self) -> int:
        """Decisions and verdicts held for repeats (what the caches cost in memory)."""
        return len(self._decisions) + len(self._verdicts)

    def evaluate(self, request: PolicyRequest) -> PolicyDecision:
        """Ask Cedar, always (`decide` answers repeats from its cache)."""
        cedar_request, entities = to_cedar(request)
        result = cedarpy.is_authorized(
            cedar_request, self._policies, self._parsed(entities), self._schema
        )
        errors = tuple(str(e) for e in result.diagnostics.errors)
        fired = set(result.diagnostics.reasons)
        determining = [p for cedar_id, p in self._info.items() if cedar_id in fired]  # file order
        if result.decision == cedarpy.Decision.Allow:
            return PolicyDecision(
                allowed=True,
                policy_ids=tuple(p.policy_id for p in determining),
                reasons=tuple(render(p.reason, request) for p in determining),
                errors=errors,
            )
        unmet = () if determining else self._probes.nearest_unmet(request)
        ids = [p.policy_id for p in determining] + [r.rule_id for r in unmet]
        reasons = [render(p.reason, request) for p in determining]
        reasons += [render(r.text, request) for r in unmet]
        if not ids:
            ids, reasons = [DEFAULT_DENY_ID], [_no_permit(request, errors)]
        return PolicyDecision(
            allowed=False, policy_ids=tuple(ids), reasons=tuple(reasons), errors=errors
        )

    def explain(self, request: PolicyRequest) -> Explanation:
        """The decision plus every applicable permit's requirements, met or not."""
        decision = self.decide(request)
        return Explanation(
            allowed=decision.allowed,
            policy_ids=decision.policy_ids,
            reasons=decision.reasons,
            errors=decision.errors,
            requirements=self._probes.check(request),
        )


def _no_permit(request: PolicyRequest, errors: tuple[str, ...]) -> str:
    if errors:
        return "the request could not be evaluated: " + "; ".join(errors)
    return f"no policy permits {request.action.value} for this principal and device"


def _policy_info(as_json: Mapping[str, Any]) -> tuple[dict[str, PolicyInfo], list[str]]:
    """Read @id, @reason and @requireN from every policy; list what is missing or repeated."""
    errors: list[str] = []
    if as_json.get("templates"):
        errors.append("templates are not supported: write static policies")
    info: dict[str, PolicyInfo] = {}
    seen: set[str] = set()
    for cedar_id, policy in as_json.get("staticPolicies", {}).items():
        notes = policy.get("annotations", {})
        policy_id = notes.get("id") or ""
        where = f"policy {policy_id or cedar_id}"
        if not policy_id:
            errors.append(f'{where}: needs @id("...")')
        elif policy_id in seen:
            errors.append(f"{where}: @id is used twice")
        seen.add(policy_id)
        if not notes.get("reason"):
            errors.append(f'{where}: needs @reason("...")')
        requirements: list[Requirement] = []
        if policy["effect"] == "permit":
            requirements, problems = _requirements(policy_id, policy, notes)
            errors += [f"{where}: {p}" for p in problems]
        info[cedar_id] = PolicyInfo(
            cedar_id=cedar_id,
            policy_id=policy_id,
            effect=policy["effect"],
            reason=notes.get("reason") or "",
            json=policy,
            requirements=tuple(requirements),
        )
    return info, errors


def _requirements(
    policy_id: str, policy: Mapping[str, Any], notes: Mapping[str, str]
) -> tuple[list[Requirement], list[str]]:
    conditions = policy.get("conditions", [])
    found: list[Requirement] = []
    problems: list[str] = []
    for n in range(1, len(conditions) + 1):
        note = notes.get(f"require{n}", "")
        name, sep, text = note.partition(":")
        if not sep or not name.strip() or not text.strip():
            problems.append(f'needs @require{n}("name: what is required") for condition {n}')
            continue
        found.append(Requirement(policy_id=policy_id, name=name.strip(), text=text.strip()))
    extra = [k for k in notes if k.startswith("require") and k[7:].isdigit()]
    extra = [k for k in extra if not 1 <= int(k[7:]) <= len(conditions)]
    problems += [f"@{k} names no condition (the policy has {len(conditions)})" for k in extra]
    return found, problems
