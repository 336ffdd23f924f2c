# The README's commands. `make demo` and `make test` work on a fresh machine with
# Python 3.11+, Node.js/npm and make: they install everything else themselves.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
NODE_STAMP := node_modules/.installed

.PHONY: install demo test lint typecheck unit integration infra-check bench clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

install: $(STAMP) $(NODE_STAMP)

demo: install
	$(VENV)/bin/nexxt365 demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy shared function_app.py sync_users sync_contacts calendar_status bench

unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

integration: install
	$(PY) -m pytest -q tests/integration

infra-check:
	bash infra/check.sh

# Two workers: most of a test's time is waiting on the simulators and Azurite over sockets.
test: install lint typecheck infra-check
	$(PY) -m pytest -q -n 2 tests

bench: install
	$(PY) -m bench.bench

clean:
	rm -rf $(VENV) .venv-infra node_modules .mypy_cache .ruff_cache .pytest_cache
