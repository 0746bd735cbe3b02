"""Properties of the decision point over random attribute sets (stdlib random, fixed seeds).

Default-deny: an empty policy set denies everything, and a request that no permit matches is
denied. Forbid never widens: adding forbid policies over random conditions never turns a deny
into an allow (and every allow that survives is still named by the same permits).
"""

from __future__ import annotations

import random

import pytest

from broker.policy import (
    DEFAULT_POLICIES,
    DEFAULT_SCHEMA,
    Action,
    DeviceAttributes,
    Environment,
    JobAttributes,
    PolicyEngine,
    PolicyRequest,
    PrincipalAttributes,
)

SEEDS = range(40)
PER_SEED = 12
NOW = 1_790_000_000
TIERS = ("open", "internal", "restricted", "secret")
PLACES = ("US", "DE", "FR", "JP")
PROJECTS = ("qsim", "fusion", "chem")
SCHEMA = DEFAULT_SCHEMA.read_text()
DEFAULT = DEFAULT_POLICIES.read_text()


def random_request(rng: random.Random) -> PolicyRequest:
    p_rank, d_rank = rng.randrange(len(TIERS)), rng.randrange(len(TIERS))
    near = [NOW - 1, NOW, NOW + 1, 0, NOW + 86_400, NOW - 86_400]
    principal = PrincipalAttributes(
        name=f"p{rng.randrange(1000)}",
        tier=TIERS[p_rank],
        tier_rank=p_rank,
        affiliation=rng.choice(("uni", "lab", "")),
        nationality=rng.choice(PLACES),
        jurisdictions=frozenset(rng.sample(PLACES, rng.randrange(3))),
        projects=frozenset(rng.sample(PROJECTS, rng.randrange(3))),
        roles=frozenset(rng.sample(("researcher", "operator", "security"), rng.randrange(3))),
        clearance_expires_at=rng.choice(near),
        training={"dual-use-awareness": rng.choice(near)} if rng.random() < 0.7 else {},
        licences=frozenset(rng.sample(("EAR-4A906", "EAR-3A001"), rng.randrange(3))),
    )
    device = DeviceAttributes(
        device_id=f"d{rng.randrange(100)}",
        tier=TIERS[d_rank],
        tier_rank=d_rank,
        jurisdiction=rng.choice(PLACES),
        export_class=rng.choice(("EAR99", "4A906.a")),
        export_licence=rng.choice(("EAR-4A906", "")),
        state=rng.choice(("online", "draining", "maintenance", "retired")),
        reserved_for=frozenset(rng.sample(PROJECTS, rng.randrange(2))),
        reserved_from=rng.choice(near),
        reserved_until=rng.choice(near),
    )
    action = rng.choice(list(Action))
    job = None
    if action is not Action.VIEW_DEVICE:
        job = JobAttributes(
            project=rng.choice(PROJECTS),
            data_label=rng.choice(("TLP:CLEAR", "TLP:AMBER")),
            shots=rng.randrange(1, 10_000),
            qubits=rng.randrange(1, 200),
        )
    env = Environment(
        now=NOW,
        attestation=rng.choice(("affirming", "warning", "none")),
        remote_access_is_export=rng.random() < 0.8,
    )
    return PolicyRequest(
        principal=principal, device=device, action=action, environment=env, job=job
    )


def random_forbid(rng: random.Random, n: int) -> str:
    """A forbid over one to three random attribute conditions, valid against the schema."""
    atoms = [
        f'principal.nationality == "{rng.choice(PLACES)}"',
        f"principal.tier_rank < {rng.randrange(4)}",
        f"resource.tier_rank >= {rng.randrange(4)}",
        f'principal.projects.contains("{rng.choice(PROJECTS)}")',
        f'resource.state != "{rng.choice(("online", "draining"))}"',
        f"context.env.now >= {rng.choice((NOW - 1, NOW, NOW + 1))}",
        f'principal.roles.contains("{rng.choice(("researcher", "operator"))}")',
        f'resource.export_class == "{rng.choice(("EAR99", "4A906.a"))}"',
        f'!principal.licences.contains("{rng.choice(("EAR-4A906", "EAR-3A001"))}")',
        'principal.hasTag("dual-use-awareness")',
    ]
    body = " && ".join(rng.sample(atoms, rng.randrange(1, 4)))
    return (
        f'@id("random-forbid-{n}")\n@reason("random forbid {n}")\n'
        f"forbid (principal, action, resource) when {{ {body} }};\n"
    )


@pytest.fixture(scope="module")
def default_engine() -> PolicyEngine:
    return PolicyEngine.load(DEFAULT, SCHEMA)


@pytest.mark.parametrize("seed", SEEDS)
def test_an_empty_policy_set_denies_everything(seed: int) -> None:
    engine = PolicyEngine.load("", SCHEMA)
    rng = random.Random(seed)
    for _ in range(PER_SEED):
        decision = engine.decide(random_request(rng))
        assert not decision.allowed
        assert decision.policy_ids == ("default-deny",)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_request_no_permit_matches_is_denied(default_engine: PolicyEngine, seed: int) -> None:
    rng = random.Random(seed)
    permits = [p for p in default_engine.policies.values() if p.effect == "permit"]
    for _ in range(PER_SEED):
        request = random_request(rng)
        explanation = default_engine.explain(request)
        by_permit: dict[str, bool] = {}
        for check in explanation.requirements:
            policy_id = check.rule_id.split("/")[0]
            by_permit[policy_id] = by_permit.get(policy_id, True) and check.met
        if not any(by_permit.values()):
            assert not explanation.allowed, request
            assert all(
                i in {p.policy_id for p in default_engine.policies.values()} or "/" in i
                for i in explanation.policy_ids
            )
        if explanation.allowed:
            assert set(explanation.policy_ids) <= {p.policy_id for p in permits}


@pytest.mark.parametrize("seed", SEEDS)
def test_adding_forbid_policies_never_turns_a_deny_into_an_allow(
    default_engine: PolicyEngine, seed: int
) -> None:
    rng = random.Random(seed)
    forbids = "".join(random_forbid(rng, n) for n in range(rng.randrange(1, 4)))
    stricter = PolicyEngine.load(DEFAULT + forbids, SCHEMA)
    for _ in range(PER_SEED * 2):
        request = random_request(rng)
        before, after = default_engine.decide(request), stricter.decide(request)
        if not before.allowed:
            assert not after.allowed, (forbids, request)
        if after.allowed:
            assert before.allowed
            assert after.policy_ids == before.policy_ids


def test_the_random_generator_reaches_both_decisions(default_engine: PolicyEngine) -> None:
    rng = random.Random(0)
    outcomes = {default_engine.decide(random_request(rng)).allowed for _ in range(2000)}
    assert outcomes == {True, False}
