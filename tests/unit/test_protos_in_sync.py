"""The committed stubs must be exactly what the .proto sources generate."""

from __future__ import annotations

import filecmp
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_stubs_match_proto_sources(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("protogen", ROOT / "proto" / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["protogen"] = module
    spec.loader.exec_module(module)
    module.generate(tmp_path)
    fresh = tmp_path / "qtestbed" / "v1"
    committed = ROOT / "qtestbed" / "v1"
    generated = sorted(p.name for p in fresh.iterdir() if p.is_file())
    assert generated, "the generator produced nothing"
    drifted = [
        name
        for name in generated
        if not (committed / name).exists()
        or not filecmp.cmp(fresh / name, committed / name, shallow=False)
    ]
    assert not drifted, f"stubs out of date, run `make protos`: {drifted}"
    stale = sorted(p.name for p in committed.glob("*_pb2*") if p.name not in generated)
    assert not stale, f"stubs without a .proto source: {stale}"
