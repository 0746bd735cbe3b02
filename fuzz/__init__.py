"""Fuzz targets for everything that decodes bytes from outside (see `fuzz.run`).

Each target module has `one_input(data: bytes) -> None`: it decodes `data` the way the product
does and lets through only the error types the decoder documents; anything else raised is a
crash. `fuzz.run` drives them with atheris (coverage-guided), `tests/unit/test_fuzz_targets.py`
replays their seeds with a few hundred mutations in `make test` so they cannot rot.
"""
