"""A researcher's command never loads the broker or the drivers: the CLI imports them only
inside the commands that run them in this process (broker, driver, demo, audit verify, report,
policy check|test|explain offline)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from broker.policy import Action
from qtestbed.cli import policy

# Runs in a fresh interpreter: the test process itself has long since imported the broker.
PROBE = textwrap.dedent(
    """
    import sys
    from qtestbed.cli.main import main

    code = main(sys.argv[1:])
    loaded = sorted({m.split(".")[0] for m in sys.modules} & {"broker", "drivers"})
    print(code, ",".join(loaded) or "-")
    """
)


def _loaded_after(*argv: str) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, check=False
    )
    code, loaded = done.stdout.splitlines()[-1].split()  # after the command's own output
    return int(code), loaded


def test_researcher_commands_do_not_load_the_broker() -> None:
    # The profile does not exist: the command gets as far as opening its client, then stops.
    assert _loaded_after("jobs", "--json", "--profile", "/nonexistent/alice.toml") == (2, "-")
    assert _loaded_after("policy", "explain", "--principal", "a", "--device", "d") == (2, "-")


def test_offline_commands_load_the_broker_when_they_run() -> None:
    assert _loaded_after("policy", "check") == (0, "broker")


def test_the_cli_knows_every_policy_action() -> None:
    # The parser lists the actions itself, so that building it does not load the policy engine.
    assert tuple(action.value for action in Action) == policy.ACTIONS


def test_the_witness_runs_without_the_broker(tmp_path: Path) -> None:
    # The witness runs on the security team's machine: attestation and the client only. It
    # gets as far as reading the broker's certificate, which is missing here.
    argv = ("audit", "witness", "--state", str(tmp_path / "w"), "--log-cert", "/nonexistent.pem")
    assert _loaded_after(*argv, "--metrics-listen", "") == (2, "-")
