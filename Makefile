# gpuconfig — `make run` serves the site, `make test` runs the whole suite.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The newest Python 3.11+ on PATH (3.12+ gets Django 6, 3.11 Django 5.2 LTS).
PYTHON ?= $(shell for p in python3.14 python3.13 python3.12 python3.11 python3; do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && { echo $$p; break; }; done)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
PYTEST_ARGS ?=

.PHONY: help run test test-sqlite test-postgres test-fast bench mutation chaos migrate lint clean dockerd-start dockerd-stop

help:
	@echo "make run    serve gpuconfig on http://127.0.0.1:8000 (worker and beat beside it)"
	@echo "make test   run the whole test suite (SQLite, then PostgreSQL)"
	@echo "make bench  print planner, detection, API and apply figures"
	@echo "make chaos  kill the worker at 200 points of applies; print how many recovered"

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.11+ is needed (python3.11 or newer on PATH)."; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
		echo "Could not create $(VENV): on Debian/Ubuntu install python3-venv (apt-get install python3-venv)."; exit 1; }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

migrate: $(STAMP)
	$(PY) manage.py migrate --noinput

run: $(STAMP)
	@bash scripts/run.sh

dockerd-start:
	@bash scripts/test-dockerd.sh start

dockerd-stop:
	@bash scripts/test-dockerd.sh stop

# The whole suite on the embedded default (SQLite), then again on PostgreSQL (without the
# browser and the chaos run, which do not depend on the database).
test: $(STAMP) dockerd-start
	$(MAKE) test-sqlite
	$(MAKE) test-postgres

test-sqlite: $(STAMP)
	eval "$$(bash scripts/test-dockerd.sh env)"; \
	REDIS_URL=$(TEST_REDIS_URL) DATABASE_URL= $(PY) -m pytest $(PYTEST_ARGS)

test-postgres: $(STAMP)
	eval "$$(bash scripts/test-dockerd.sh env)"; \
	REDIS_URL=$(TEST_REDIS_URL) DATABASE_URL=$(TEST_DATABASE_URL) $(PY) -m pytest -m "not e2e and not chaos" $(PYTEST_ARGS)

# Quick loop while developing: no engine, no browser.
test-fast: $(STAMP)
	REDIS_URL=$(TEST_REDIS_URL) $(PY) -m pytest -m "not integration and not e2e" $(PYTEST_ARGS)

# `make bench` leaves the machine as it found it: the test engine is stopped afterwards only if
# this run started it (also when a section fails). BENCH=api runs only the API part.
BENCH ?=
TEST_DOCKERD ?= bash scripts/test-dockerd.sh
bench: $(STAMP)
	@if $(TEST_DOCKERD) running; then started=; else started=1; fi; \
	$(TEST_DOCKERD) start >/dev/null && eval "$$($(TEST_DOCKERD) env)" && \
	REDIS_URL=$(TEST_REDIS_URL) $(PY) -m bench $(BENCH); status=$$?; \
	if [ -n "$$started" ]; then echo "bench: stopping the test engine it started"; \
		$(TEST_DOCKERD) stop; fi; \
	exit $$status

# Mutation check of the planner and the apply diff (pyproject's [tool.mutmut]); CPU-heavy.
MUTANTS ?= 'assignments.planner.*' $(foreach f,diff differs _same_budget _holds \
	freed_gpus_needed dependencies,'applies.applying.x_$(f)__mutmut_*')
mutation: $(STAMP)
	rm -rf mutants
	REDIS_URL=$(TEST_REDIS_URL) $(VENV)/bin/mutmut run $(MUTANTS)
	$(VENV)/bin/mutmut results

# 200 seeded kill points (every step, mid-health-wait, mid-rollback) on the test engine.
CHAOS_POINTS ?= 200
chaos: $(STAMP) dockerd-start
	eval "$$(bash scripts/test-dockerd.sh env)"; \
	REDIS_URL=$(TEST_REDIS_URL) GPUCONFIG_CHAOS_POINTS=$(CHAOS_POINTS) $(PY) -m pytest -s -q \
		-o timeout=0 \
		tests/integration/test_chaos.py::test_the_worker_killed_at_any_step_of_an_apply_recovers

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(PY) scripts/import_cycles.py
