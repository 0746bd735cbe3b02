"""`qtestbed policy check | test | explain` through their handlers, with exit codes and output."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from broker.policy import DEFAULT_POLICIES
from broker.policy.corpus import SHIPPED_CORPUS
from qtestbed.cli import policy


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    policy.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code


def test_check_accepts_the_shipped_set(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["policy", "check"]) == 0
    assert "OK: 6 policies" in capsys.readouterr().out


def test_check_refuses_an_unknown_attribute(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.cedar"
    bad.write_text(DEFAULT_POLICIES.read_text().replace("resource.state", "resource.status"))
    assert run(["policy", "check", "--policies", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "INVALID" in out
    assert "attribute `status` on entity type `Qtestbed::Device` not found" in out


def test_test_runs_the_corpus_and_fails_on_a_broken_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["policy", "test", str(SHIPPED_CORPUS)]) == 0
    assert "69/69 cases passed" in capsys.readouterr().out
    weak = tmp_path / "weak.cedar"
    weak.write_text(
        DEFAULT_POLICIES.read_text().replace(
            'context.env.attestation != "affirming"', 'context.env.attestation == "never"'
        )
    )
    assert run(["policy", "test", str(SHIPPED_CORPUS), "--policies", str(weak)]) == 1
    assert "FAIL attestation 'warning' at dispatch: denied" in capsys.readouterr().out


def test_explain_shows_the_unmet_requirement(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    principal, device = tmp_path / "p.json", tmp_path / "d.json"
    principal.write_text(
        json.dumps({"name": "bob", "tier": "open", "tier_rank": 0, "projects": ["qsim"]})
    )
    device.write_text(json.dumps({"device_id": "q", "tier": "secret", "tier_rank": 3}))
    argv = [
        "policy",
        "explain",
        "--principal-json",
        str(principal),
        "--device-json",
        str(device),
        "--now",
        "2026-10-01T00:00:00Z",
        "--json",
    ]
    assert run(argv) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["decision"] == "deny"
    assert out["policy_ids"] == ["researcher-submit/tier"]
    assert out["reasons"] == [
        "clearance tier 'secret' or higher is required; you hold 'open'; or a grant for this "
        "device: ask with 'qtestbed access request --device q --for 7d --reason ...'"
    ]
    assert run([*argv[:-1], "--action", "ViewDevice"]) == 1
    assert "[NOT MET] researcher-view/tier" in capsys.readouterr().out


def test_explain_with_a_malformed_file_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "p.json"
    bad.write_text('{"name": 3}')
    argv = ["policy", "explain", "--principal-json", str(bad), "--device-json", str(bad)]
    assert run(argv) == 2
