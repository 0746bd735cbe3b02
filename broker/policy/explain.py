"""Why a request was denied: which requirements of which permit were not met.

Cedar says which policies determined a decision, but a default deny has none: nothing matched.
To tell the researcher what would grant access, every permit policy is split into probes, one
per `when`/`unless` clause, each keeping the policy's scope (principal, action, resource) and
that one clause, plus a scope-only probe. All probes are evaluated in one Cedar call; a permit
whose scope applies and whose clause-probe is not satisfied has that requirement unmet. The
clause's `@requireN("name: text")` annotation says what the requirement is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cedarpy

from broker.policy.attributes import PolicyRequest
from broker.policy.translate import render, to_cedar


@dataclass(frozen=True, kw_only=True, slots=True)
class Requirement:
    """One condition clause of a permit policy, named by its `@requireN` annotation."""

    policy_id: str
    name: str
    text: str  # template, rendered against a request

    @property
    def rule_id(self) -> str:
        return f"{self.policy_id}/{self.name}"


@dataclass(frozen=True, kw_only=True, slots=True)
class PolicyInfo:
    """A loaded policy: Cedar's generated id, our @id, its @reason and its requirements."""

    cedar_id: str
    policy_id: str
    effect: str  # "permit" | "forbid"
    reason: str
    json: Mapping[str, Any]
    requirements: tuple[Requirement, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class RequirementCheck:
    """A requirement of an applicable permit and whether this request meets it."""

    rule_id: str
    met: bool
    text: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Explanation:
    """A decision and, for each permit applying to the action, each requirement's status."""

    allowed: bool
    policy_ids: tuple[str, ...]
    reasons: tuple[str, ...]
    errors: tuple[str, ...]
    requirements: tuple[RequirementCheck, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision": "allow" if self.allowed else "deny",
            "policy_ids": list(self.policy_ids),
            "reasons": list(self.reasons),
            "errors": list(self.errors),
            "requirements": [
                {"rule_id": r.rule_id, "met": r.met, "text": r.text} for r in self.requirements
            ],
        }

    def render(self) -> str:
        lines = [f"decision: {'ALLOW' if self.allowed else 'DENY'} ({', '.join(self.policy_ids)})"]
        lines += [f"  because: {r}" for r in self.reasons]
        lines += [f"  error: {e}" for e in self.errors]
        if self.requirements:
            lines.append("requirements of the permits for this action:")
            for r in self.requirements:
                mark = "met    " if r.met else "NOT MET"
                detail = "" if r.met else f": {r.text}"
                lines.append(f"  [{mark}] {r.rule_id}{detail}")
        return "\n".join(lines)


class Probes:
    """The per-clause probe policies of every permit, evaluated together in one Cedar call."""

    def __init__(self, info: Mapping[str, PolicyInfo], schema: cedarpy.Schema) -> None:
        self._schema = schema
        self._permits = [p for p in info.values() if p.effect == "permit"]
        probes: dict[str, Any] = {}
        for permit in self._permits:
            scope = {k: v for k, v in permit.json.items() if k not in ("conditions",)}
            probes[f"{permit.cedar_id}.scope"] = {**scope, "conditions": []}
            for n, condition in enumerate(permit.json.get("conditions", []), start=1):
                probes[f"{permit.cedar_id}.{n}"] = {**scope, "conditions": [condition]}
        document = {"staticPolicies": probes, "templates": {}, "templateLinks": []}
        self._set = cedarpy.PolicySet.from_json_str(json.dumps(document)) if probes else None

    def _satisfied(self, request: PolicyRequest) -> set[str]:
        if self._set is None:
            return set()
        cedar_request, entities = to_cedar(request)
        result = cedarpy.is_authorized(cedar_request, self._set, entities, self._schema)
        return set(result.diagnostics.reasons)

    def _by_permit(self, request: PolicyRequest) -> list[list[tuple[Requirement, bool]]]:
        held = self._satisfied(request)
        return [
            [(r, f"{p.cedar_id}.{n}" in held) for n, r in enumerate(p.requirements, start=1)]
            for p in self._permits
            if f"{p.cedar_id}.scope" in held
        ]

    def nearest_unmet(self, request: PolicyRequest) -> tuple[Requirement, ...]:
        """The unmet requirements of the applicable permit that misses the fewest."""
        best: tuple[Requirement, ...] | None = None
        for checks in self._by_permit(request):
            unmet = tuple(r for r, met in checks if not met)
            if unmet and (best is None or len(unmet) < len(best)):
                best = unmet
        return best or ()

    def check(self, request: PolicyRequest) -> tuple[RequirementCheck, ...]:
        return tuple(
            RequirementCheck(rule_id=r.rule_id, met=met, text=render(r.text, request))
            for checks in self._by_permit(request)
            for r, met in checks
        )
