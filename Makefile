# Two commands for a fresh clone: `make demo` and `make test`. Both install what they need.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements/constraints.txt | sha256sum | cut -c1-12)
DATA_CONFIG ?=

.PHONY: install demo simulate dev serve metrics test test-fast lint format bench lock clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements/constraints.txt -e ".[dev]"
	rm -f $(VENV)/.installed-* && touch $@

## Run the main job end to end on the embedded default (DuckDB + SQLite + local files).
demo: install
	$(BIN)/python -m recsys_assets demo $(if $(DATA_CONFIG),--data-config $(DATA_CONFIG))

## The closed loop on the synthetic shop: drift, sensor-triggered retraining, recovery (data/simulation/)
simulate: install
	$(BIN)/python -m recsys_assets simulate

## Dagster UI and daemon (sensors and schedules tick) on http://127.0.0.1:3000
dev: install
	$(BIN)/python -m recsys_assets dev

## The recommendation service over the promoted model (after make demo) on http://127.0.0.1:3001
serve: install
	$(BIN)/python -m recsys_assets serve

## The pipeline's Prometheus metrics (runs, assets, checks, drift) on http://127.0.0.1:9464/metrics
metrics: install
	$(BIN)/python -m recsys_assets metrics

## Lint, then the whole test suite, slow tests included (starts the loopback Redis the
## Redis-store test uses).
test: install lint
	scripts/ensure_redis.sh
	scripts/ensure_promtool.sh
	$(BIN)/python -m pytest -m "slow or not slow"

## The default suite: unit and quick integration tests (pytest's default leaves out `slow`).
test-fast: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports  # the dependency rules of docs/architecture.md (pyproject.toml)
	@! find . -name '*.ipynb' -not -path './.venv/*' | grep . || (echo "notebooks are not allowed" && false)

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install
	$(BIN)/python benchmarks/bench_ingest.py

## Re-resolve every dependency and rewrite the constraints file.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet -e ".[dev]"
	{ echo "# Exact versions of every package, resolved together on Python 3.11 (pip freeze)."; \
	  echo "# Regenerate with: make lock"; \
	  .lock-venv/bin/python -m pip freeze --exclude-editable; } > requirements/constraints.txt
	rm -rf .lock-venv

clean:
	rm -rf .dagster_home data/warehouse data/models data/bentoml data/feedback reports feature_repo/data
