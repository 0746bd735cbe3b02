"""Clearance and export-control policy: a Cedar decision point with ids, reasons and a corpus.

Self-contained (no broker imports): the broker builds `PolicyRequest`s from its registries and
asks `PolicyEngine.decide`. See schema.cedarschema for the attributes and where each comes from,
default.cedar for the shipped facility rules.
"""

from broker.policy.attributes import (
    Action,
    AttributesError,
    DeviceAttributes,
    Environment,
    JobAttributes,
    PolicyRequest,
    PrincipalAttributes,
)
from broker.policy.engine import (
    DEFAULT_POLICIES,
    DEFAULT_SCHEMA,
    PolicyDecision,
    PolicyEngine,
    PolicyError,
    Verdict,
)
from broker.policy.explain import Explanation, RequirementCheck

__all__ = [
    "DEFAULT_POLICIES",
    "DEFAULT_SCHEMA",
    "Action",
    "AttributesError",
    "DeviceAttributes",
    "Environment",
    "Explanation",
    "JobAttributes",
    "PolicyDecision",
    "PolicyEngine",
    "PolicyError",
    "PolicyRequest",
    "PrincipalAttributes",
    "RequirementCheck",
    "Verdict",
]
