# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv and install the project with everything it needs from its own files.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

# In CI the PostgreSQL tests must run (and fail if the server is unreachable); the CI machine's
# server is the default when no DSN is given.
ifeq ($(CI),true)
QTESTBED_TEST_PG_DSN ?= postgresql://postgres@127.0.0.1:5432/test
export QTESTBED_TEST_PG_DSN
endif

.PHONY: setup demo test lint typecheck unit protos bench fuzz clean

# The tests' third-party backend plugin (tests/fixtures/backend_plugin) is installed beside the
# project, as a vendor's package would be.
FIXTURE_PLUGIN := tests/fixtures/backend_plugin

$(STAMP): pyproject.toml $(FIXTURE_PLUGIN)/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps -e $(FIXTURE_PLUGIN)
	touch $(STAMP)

# checkov (the IaC linter the tests run on deploy/kubernetes) in a virtualenv of its own: it pins
# packaging and asteval below the versions the project's environment resolves to.
CHECKOV := $(VENV)/checkov/bin/checkov
CHECKOV_VERSION := 3.3.30

$(CHECKOV): $(STAMP)
	$(PYTHON) -m venv $(VENV)/checkov
	$(VENV)/checkov/bin/python -m pip install --quiet 'checkov==$(CHECKOV_VERSION)'

setup: $(STAMP) $(CHECKOV)
	bash deploy/prometheus/install-promtool.sh $(BIN)

demo: setup
	$(BIN)/qtestbed demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

# Most tests wait on real processes and sockets rather than compute, so three pytest workers
# keep two cores busy; each test file stays on one worker (its module fixtures are made once).
# PYTEST_WORKERS=0 runs everything in this one process.
PYTEST_WORKERS ?= 3
unit: setup
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile

test: lint typecheck unit

protos: setup
	$(BIN)/python proto/generate.py

bench: setup
	$(BIN)/python bench/bench_broker.py
	$(BIN)/python bench/bench_policy.py
	$(BIN)/python bench/bench_metrics.py
	$(BIN)/python bench/bench_hidden.py
	$(BIN)/python bench/bench_streams.py
	$(BIN)/python bench/bench_decode_fairness.py
	$(BIN)/python bench/bench_pipeline.py
	$(BIN)/python bench/bench_hostile.py
	$(BIN)/python bench/bench_goodput.py

# Each fuzz target under atheris for FUZZ_SECONDS (not part of `make test`); non-zero on a crash.
FUZZ_SECONDS ?= 20
fuzz: setup
	$(BIN)/python -c 'import atheris' 2>/dev/null || $(BIN)/python -m pip install --quiet -e '.[fuzz]'
	$(BIN)/python -m fuzz.run --seconds $(FUZZ_SECONDS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
