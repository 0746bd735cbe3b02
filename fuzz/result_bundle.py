"""Result bundles as `qtestbed receipt verify` reads them: `ResultBundle.from_json` on the file's
text, then `verify_bundle` (documented to return its problems, never to raise) against the fixed
facility, audit key included.

Documented failure of the decoder: ValueError ("result bundle is malformed: ...")."""

from __future__ import annotations

from fuzz import world
from qtestbed.receipt_bundle import ResultBundle, verify_bundle

EXPECTED: tuple[type[BaseException], ...] = (ValueError,)


def one_input(data: bytes) -> None:
    try:
        text = data.decode("utf-8")  # the command reads the file as UTF-8 text
    except UnicodeDecodeError:
        return
    try:
        bundle = ResultBundle.from_json(text)
    except EXPECTED:
        return
    verdict = verify_bundle(
        bundle, world.anchor_pem(), now=world.NOW_DT, audit_key=world.AUDIT_KEY.public_key
    )
    assert all(isinstance(p, str) for p in verdict.problems)
