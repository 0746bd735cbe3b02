"""`make fuzz`: each target under atheris for a bounded time, in its own process.

    python -m fuzz.run [--seconds N] [--timeout S] [TARGET ...]

Prints the inputs executed per target and in total; exits non-zero if any target crashed (an
exception outside its documented errors, a hang past the per-input deadline, or memory past
libFuzzer's limit). The crashing input is kept in fuzz/crashes/ to become a regression test.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fuzz.targets import NAMES, load

CRASHES = Path(__file__).parent / "crashes"
_EXECUTED = re.compile(rb"stat::number_of_executed_units:\s*(\d+)")


@dataclass(frozen=True, slots=True)
class Outcome:
    name: str
    inputs: int
    returncode: int


def fuzz_one(name: str, seconds: int, timeout: int, corpus: Path) -> Outcome:
    CRASHES.mkdir(exist_ok=True)
    corpus.mkdir(parents=True, exist_ok=True)
    target = load(name)
    dictionary = [f"-dict={target.dictionary}"] if target.dictionary else []
    command = [
        sys.executable,
        "-m",
        "fuzz.atheris_main",
        name,
        f"-max_total_time={seconds}",
        f"-timeout={timeout}",
        "-rss_limit_mb=4096",  # above the 1 GiB address-space cap the circuit targets set
        "-max_len=4096",
        "-print_final_stats=1",
        f"-artifact_prefix={CRASHES}/{name}-",
        *dictionary,
        str(corpus),  # new inputs go here, not into the committed seeds
        str(target.seeds),
    ]
    done = subprocess.run(command, capture_output=True, check=False)
    log = done.stderr
    found = _EXECUTED.findall(log)
    if done.returncode != 0:
        sys.stderr.write(log.decode(errors="replace")[-6000:])
    return Outcome(name, int(found[-1]) if found else 0, done.returncode)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=int, default=60, help="fuzzing time per target")
    parser.add_argument("--timeout", type=int, default=10, help="per-input deadline, seconds")
    parser.add_argument("targets", nargs="*", default=list(NAMES), help="targets (default all)")
    args = parser.parse_args(argv)
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="qtestbed-fuzz-") as work:
        for name in args.targets:
            outcome = fuzz_one(name, args.seconds, args.timeout, Path(work) / name)
            verdict = "ok" if outcome.returncode == 0 else f"CRASH (exit {outcome.returncode})"
            print(f"{name:16} {outcome.inputs:>10} inputs  {verdict}", flush=True)
            outcomes.append(outcome)
    total = sum(o.inputs for o in outcomes)
    crashed = [o.name for o in outcomes if o.returncode != 0]
    print(
        f"{'total':16} {total:>10} inputs  {'crashed: ' + ', '.join(crashed) if crashed else 'ok'}"
    )
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
