"""What a refusal rule id means, in words, from the facility's policy set.

Rule ids are a policy's `@id` (a forbid, or a permit that decided), `<permit id>/<requirement>`
for a permit requirement that was not met, or one of the broker's own ids. The texts come from
the policy set as it is now, which may differ from the one in force when a refusal was made;
the per-refusal reasons in the audit log are not used, since they quote the requester's own
attributes (tier, projects, clearance dates).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from broker.policy.engine import DEFAULT_DENY_ID, PolicyEngine, PolicyError
from broker.policy.explain import PolicyInfo

# The broker's own rule ids (broker.access.clearance, broker.jobs.submit).
FIXED_REASONS = {
    DEFAULT_DENY_ID: "no policy permits the request",
    "principal.unknown": "the requester is no longer registered at the facility",
}


class RuleReasons:
    """Maps rule ids to a plain description; `problem` says why the policy set is missing."""

    def __init__(self, policies: Mapping[str, PolicyInfo], problem: str = "") -> None:
        self.policies = dict(policies)
        self.problem = problem

    @classmethod
    def load(cls, path: Path) -> RuleReasons:
        try:
            return cls(PolicyEngine.load_files(path).policies)
        except PolicyError as exc:
            first = exc.errors[0] if exc.errors else str(exc)
            return cls({}, problem=f"the policy set {path} could not be read ({first})")

    def describe(self, rule: str) -> str:
        if rule in FIXED_REASONS:
            return FIXED_REASONS[rule]
        if rule.startswith("quota."):
            return "a usage quota was reached"
        policy_id, _, requirement = rule.partition("/")
        info = self.policies.get(policy_id)
        if info is None:
            return "(this rule is not in the current policy set)"
        if not requirement:
            return info.reason
        if not any(r.name == requirement for r in info.requirements):
            return f"{info.reason} (requirement '{requirement}' is no longer in this policy)"
        return f"{info.reason}; not met: {requirement}"
