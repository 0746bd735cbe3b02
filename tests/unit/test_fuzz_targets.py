"""Every fuzz target (fuzz/) runs its seeds and a few hundred mutations of them without a crash,
so the targets keep decoding what the product decodes (`make fuzz` runs them at length)."""

from __future__ import annotations

import random

import pytest

from fuzz.targets import NAMES, load

INPUTS = 300
QPY_INPUTS = 40  # a forked child per input (see fuzz/qpy.py)


def mutations(seeds: list[bytes], count: int, rng: random.Random) -> list[bytes]:
    """The seeds, then byte flips, insertions, deletions, truncations and splices of them."""
    out = list(seeds)
    while len(out) < count:
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            move = rng.randrange(5)
            at = rng.randrange(len(data) + 1)
            if move == 0 and data:
                data[at % len(data)] ^= 1 << rng.randrange(8)
            elif move == 1:
                data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
            elif move == 2:
                del data[at : at + rng.randint(1, 16)]
            elif move == 3:
                del data[at:]
            else:
                other = rng.choice(seeds)
                data[at:] = other[rng.randrange(len(other) + 1) :]
        out.append(bytes(data))
    return out


@pytest.mark.parametrize("name", NAMES)
def test_target_survives_its_seeds_and_their_mutations(name: str) -> None:
    target = load(name)
    seeds = [p.read_bytes() for p in sorted(target.seeds.iterdir())]
    assert seeds, f"{name} has no seeds; run python -m fuzz.make_seeds"
    count = QPY_INPUTS if name == "qpy" else INPUTS
    for data in mutations(seeds, count, random.Random(name)):
        target.one_input(data)  # raises on anything but the decoder's documented errors


def test_seeds_reach_the_deep_checks() -> None:
    """The signed seeds still verify under the fixed keys, so fuzzing starts past the checks."""
    from fuzz import world
    from qtestbed.receipt_bundle import ResultBundle, verify_bundle

    bundle_file = max(load("result_bundle").seeds.iterdir(), key=lambda p: p.stat().st_size)
    bundle = ResultBundle.from_json(bundle_file.read_text())
    verdict = verify_bundle(
        bundle, world.anchor_pem(), now=world.NOW_DT, audit_key=world.AUDIT_KEY.public_key
    )
    assert verdict.problems == []
    assert verdict.audit_inclusion == "verified"
