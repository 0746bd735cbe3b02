"""The shipped corpus pins every default rule at its edges; the runner reports each mismatch."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from broker.policy import PolicyEngine
from broker.policy.corpus import SHIPPED_CORPUS, CorpusCase, load_corpus, run_corpus, summary

CORPUS = load_corpus(SHIPPED_CORPUS)


@pytest.fixture(scope="module")
def engine() -> PolicyEngine:
    return PolicyEngine.load_files(CORPUS.policies, CORPUS.schema)


@pytest.mark.parametrize("case", CORPUS.cases, ids=lambda c: c.desc)
def test_shipped_case(engine: PolicyEngine, case: CorpusCase) -> None:
    [result] = run_corpus(engine, [case])
    assert result.passed, result.failures


def test_every_shipped_rule_and_requirement_is_exercised_by_a_denial(engine: PolicyEngine) -> None:
    denied = Counter(i for c in CORPUS.cases if not c.allowed for i in c.policy_ids)
    allowed = {i for c in CORPUS.cases if c.allowed for i in c.policy_ids}
    for info in engine.policies.values():
        if info.effect == "forbid":
            assert denied[info.policy_id], info.policy_id
        else:
            assert info.policy_id in allowed, info.policy_id
            for requirement in info.requirements:
                if info.policy_id == "operator-view":
                    continue  # its one clause is the role; "no role" is denied by researcher-view
                assert denied[requirement.rule_id], requirement.rule_id


def test_runner_reports_a_wrong_expectation(engine: PolicyEngine) -> None:
    case = next(c for c in CORPUS.cases if c.allowed)
    wrong = dataclasses.replace(
        case, allowed=False, policy_ids=frozenset({"nope"}), reason="no such text"
    )
    [result] = run_corpus(engine, [wrong])
    assert not result.passed
    assert len(result.failures) == 3
    assert "decision allow, expected deny" in result.failures[0]
    assert "1/2 cases passed" in summary(run_corpus(engine, [case, wrong]))
