"""Loading refuses bad policy sets with every error listed; decisions carry ids and reasons."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from broker.policy import (
    DEFAULT_POLICIES,
    DEFAULT_SCHEMA,
    Action,
    DeviceAttributes,
    Environment,
    JobAttributes,
    PolicyEngine,
    PolicyError,
    PolicyRequest,
    PrincipalAttributes,
)
from broker.policy.attributes import AttributesError

SCHEMA = DEFAULT_SCHEMA.read_text()
OK = """@id("ok") @reason("fine") @require1("tier: tier {device.tier} needed")
permit (principal, action == Qtestbed::Action::"ViewDevice", resource)
when { principal.tier_rank >= resource.tier_rank };
"""


def request(action: Action = Action.VIEW_DEVICE) -> PolicyRequest:
    return PolicyRequest(
        principal=PrincipalAttributes(name="a", tier="open", tier_rank=0),
        device=DeviceAttributes(device_id="d", tier="secret", tier_rank=3),
        action=action,
        environment=Environment(now=1_000, attestation="affirming"),
        job=JobAttributes(project="p") if action is not Action.VIEW_DEVICE else None,
    )


def test_the_shipped_policies_load() -> None:
    engine = PolicyEngine.load_files()
    assert {p.policy_id for p in engine.policies.values()} >= {
        "researcher-submit",
        "export-jurisdiction",
        "dispatch-attestation",
    }


def test_a_syntax_error_is_refused_with_the_parser_message() -> None:
    with pytest.raises(PolicyError) as caught:
        PolicyEngine.load(OK + "permit (principal, action, resource) when { principal. };", SCHEMA)
    assert caught.value.errors[0].startswith("syntax: ")
    assert "unexpected token" in str(caught.value)


def test_an_unknown_attribute_is_refused_naming_it_and_every_other_error() -> None:
    bad = OK.replace("principal.tier_rank", "principal.clearance_level") + OK.replace(
        '"ok"', '"ok2"'
    ).replace("resource.tier_rank", "resource.colour")
    with pytest.raises(PolicyError) as caught:
        PolicyEngine.load(bad, SCHEMA)
    text = "\n".join(caught.value.errors)
    assert "attribute `clearance_level` on entity type `Qtestbed::Principal` not found" in text
    assert "attribute `colour` on entity type `Qtestbed::Device` not found" in text
    assert len(caught.value.errors) == 2


def test_an_unknown_action_and_a_bad_schema_are_refused() -> None:
    with pytest.raises(PolicyError, match="Launch"):
        PolicyEngine.load(OK.replace("ViewDevice", "Launch"), SCHEMA)
    with pytest.raises(PolicyError, match="schema: "):
        PolicyEngine.load(OK, "namespace Qtestbed { entity }")


@pytest.mark.parametrize(
    ("policy", "problem"),
    [
        (OK.replace('@id("ok") ', ""), 'needs @id("...")'),
        (OK.replace('@reason("fine") ', ""), 'needs @reason("...")'),
        (OK.replace('@require1("tier: tier {device.tier} needed")', ""), "needs @require1"),
        (OK.replace("@require1", "@require2"), "@require2 names no condition"),
        (OK + OK.replace("ViewDevice", "SubmitJob"), "@id is used twice"),
    ],
)
def test_missing_annotations_are_refused(policy: str, problem: str) -> None:
    with pytest.raises(PolicyError) as caught:
        PolicyEngine.load(policy, SCHEMA)
    assert any(problem in e for e in caught.value.errors), caught.value.errors


def test_a_default_deny_names_the_unmet_requirement_with_rendered_text() -> None:
    decision = PolicyEngine.load(OK, SCHEMA).decide(request())
    assert not decision.allowed
    assert decision.policy_ids == ("ok/tier",)
    assert decision.rule_id == "ok/tier"
    assert decision.reasons == ("tier secret needed",)


def test_no_permit_for_the_action_is_a_plain_default_deny() -> None:
    decision = PolicyEngine.load(OK, SCHEMA).decide(request(Action.SUBMIT_JOB))
    assert decision.policy_ids == ("default-deny",)
    assert "no policy permits SubmitJob" in decision.reasons[0]


def test_submit_without_job_attributes_is_rejected_before_deciding() -> None:
    with pytest.raises(AttributesError, match="needs the job"):
        PolicyRequest(
            principal=request().principal,
            device=request().device,
            action=Action.DISPATCH_JOB,
            environment=request().environment,
        )


def test_explain_lists_each_requirement_of_the_applicable_permits() -> None:
    engine = PolicyEngine.load(DEFAULT_POLICIES.read_text(), SCHEMA)
    explanation = engine.explain(request())
    checks = {c.rule_id: c.met for c in explanation.requirements}
    assert checks == {
        "researcher-view/role": True,
        "researcher-view/tier": False,
        "researcher-view/clearance": True,
        "operator-view/role": False,
    }
    assert "NOT MET] researcher-view/tier" in explanation.render()
    assert explanation.to_dict()["decision"] == "deny"


def test_cached_decisions_are_exactly_the_uncached_ones() -> None:
    """decide() answers repeats from a cache keyed by the whole request: a change of any
    attribute, or of the second, is a new question."""
    from broker.policy.corpus import SHIPPED_CORPUS, load_corpus

    engine = PolicyEngine.load_files()
    cases = load_corpus(SHIPPED_CORPUS).cases
    for case in cases:
        first = engine.decide(case.request)
        assert first == engine.evaluate(case.request)
        assert engine.decide(case.request) == first
    # The same principal and device a second before and after the clearance lapses.
    expiring = next(c for c in cases if "expires the second after now" in c.desc)
    lapsed = dataclasses.replace(
        expiring.request,
        environment=dataclasses.replace(
            expiring.request.environment, now=expiring.request.environment.now + 1
        ),
    )
    assert engine.decide(expiring.request).allowed
    assert not engine.decide(lapsed).allowed


def test_a_verdict_is_the_decision_without_its_reasons_for_every_corpus_case() -> None:
    from broker.policy.corpus import SHIPPED_CORPUS, load_corpus

    engine = PolicyEngine.load_files()
    for case in load_corpus(SHIPPED_CORPUS).cases:
        decision = engine.evaluate(case.request)
        verdict = engine.verdict(case.request)
        assert (verdict.allowed, verdict.errors) == (decision.allowed, decision.errors), case.desc


class _CedarCalls:
    """Counts Cedar evaluations (a verdict of any answer must cost exactly one)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import cedarpy

        self.count = 0
        real = cedarpy.is_authorized

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(cedarpy, "is_authorized", counted)

    def taken(self) -> int:
        count, self.count = self.count, 0
        return count


def test_a_verdict_costs_one_cedar_call_whether_it_allows_or_denies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = PolicyEngine.load_files()
    calls = _CedarCalls(monkeypatch)
    denied = request()  # a default deny: decide() runs the requirement probes as well
    allowed = dataclasses.replace(
        denied, device=dataclasses.replace(denied.device, tier="open", tier_rank=0)
    )
    engine.evaluate(denied)
    assert calls.taken() == 2
    assert not engine.verdict(denied).allowed
    assert calls.taken() == 1
    assert engine.verdict(allowed).allowed
    assert calls.taken() == 1


def test_only_verdicts_fill_the_verdict_cache_one_entry_per_whole_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What another call decided (ListDevices decides every device) must not make one lookup
    cheaper than another: a verdict is cached only once the same question was a verdict."""
    engine = PolicyEngine.load_files()
    calls = _CedarCalls(monkeypatch)
    asked = request()
    engine.decide(asked)
    calls.taken()
    engine.verdict(asked)
    assert calls.taken() == 1  # decide()'s cache did not answer it
    engine.verdict(asked)
    assert calls.taken() == 0
    other_id = dataclasses.replace(asked, device=dataclasses.replace(asked.device, device_id="e"))
    next_second = dataclasses.replace(
        asked, environment=dataclasses.replace(asked.environment, now=1_001)
    )
    for changed in (other_id, next_second):
        engine.verdict(changed)
        assert calls.taken() == 1


def test_the_verdict_cache_is_bounded_and_forgets_everything_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import broker.policy.engine as engine_module

    monkeypatch.setattr(engine_module, "_VERDICT_CACHE_SIZE", 3)
    engine = PolicyEngine.load_files()
    calls = _CedarCalls(monkeypatch)
    asked = [
        dataclasses.replace(
            request(), device=dataclasses.replace(request().device, device_id=f"d{n}")
        )
        for n in range(4)
    ]
    for each in asked[:3]:
        engine.verdict(each)
    assert calls.taken() == 3
    engine.verdict(asked[3])  # full: every entry goes, so all four questions cost the same
    engine.verdict(asked[0])
    assert calls.taken() == 2


def _at(asked: PolicyRequest, now: int) -> PolicyRequest:
    return dataclasses.replace(asked, environment=dataclasses.replace(asked.environment, now=now))


def test_the_caches_hold_the_current_seconds_only_however_long_the_engine_runs() -> None:
    """A request carries its whole second, so an answer kept past the next second is never
    read again: under steady load the caches hold what two seconds ask, not every second's
    answers up to their size limit (thousands of entries of about a kilobyte each)."""
    engine = PolicyEngine.load_files()
    for now in range(1_000, 1_300):
        for project in ("p", "q"):
            asked = _at(
                dataclasses.replace(request(Action.SUBMIT_JOB), job=JobAttributes(project=project)),
                now,
            )
            engine.decide(asked)
            engine.verdict(asked)
    assert engine.cached_answers == 2 * 2 * 2  # two seconds, two questions, decide and verdict


def test_a_repeat_in_the_same_or_the_previous_second_is_answered_from_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = PolicyEngine.load_files()
    calls = _CedarCalls(monkeypatch)
    allowed = dataclasses.replace(
        request(), device=dataclasses.replace(request().device, tier="open", tier_rank=0)
    )
    first = engine.decide(_at(allowed, 1_000))
    engine.verdict(_at(allowed, 1_000))
    calls.taken()
    engine.decide(_at(allowed, 1_001))
    engine.verdict(_at(allowed, 1_001))
    assert calls.taken() == 2
    # Decided just before the tick, asked again just after: still held.
    assert engine.decide(_at(allowed, 1_000)) is first
    engine.verdict(_at(allowed, 1_000))
    assert calls.taken() == 0
    engine.decide(_at(allowed, 1_002))  # two seconds on: 1,000's answers are gone
    calls.taken()
    assert engine.decide(_at(allowed, 1_000)) == first
    assert calls.taken() == 1
    # Decisions of 1,001 and 1,002 (the late 1,000 is not kept); verdicts of 1,000 and 1,001.
    assert engine.cached_answers == 4
