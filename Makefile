# The two commands of the README:
#   make run   - run the service locally (Azurite + Key Vault emulator + the app) until Ctrl-C
#   make test  - lint, type-check and run every test tier (unit, functions, integration)
# Both install what is missing first: a venv with requirements-dev.txt, and Azurite from package-lock.json.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP_PY  := $(VENV)/.installed
STAMP_NPM := node_modules/.installed

.PHONY: install postgres-server run test lint typecheck pytest unit functions integration bench clean

install: $(STAMP_PY) $(STAMP_NPM) postgres-server

# The PostgreSQL rotators' integration tests start a throwaway cluster from the server binaries
# (devtools/postgres.py): Debian's postgresql package provides them.
postgres-server:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
		echo "PostgreSQL server binaries missing: installing Debian's postgresql package"; \
		command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] || { echo "install PostgreSQL (initdb, pg_ctl) first" >&2; exit 1; }; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql; }

$(STAMP_PY): requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements-dev.txt
	@touch $@

$(STAMP_NPM): package.json package-lock.json
	@command -v npm >/dev/null || { echo "npm (Node.js 20+) is required for Azurite: install Node.js 20" >&2; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

run: install
	$(PY) -m devtools.stack

lint: $(STAMP_PY)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP_PY)
	$(VENV)/bin/mypy --strict shared bench

# pytest exits 5 when it collected no test: make treats that as a failure, as it should.
pytest: install
	$(PY) -m pytest

test: lint typecheck pytest

unit: $(STAMP_PY)
	$(PY) -m pytest tests/unit

functions: $(STAMP_PY)
	$(PY) -m pytest tests/functions

integration: install
	$(PY) -m pytest tests/integration

# Benchmarks print their figures next to a baseline measured in the same run (docs/benchmarks.md).
bench: install
	$(PY) -m bench.audit_append
	$(PY) -m bench.audit_contention
	$(PY) -m bench.audit_query
	$(PY) -m bench.audit_digest
	$(PY) -m bench.sweep
	$(PY) -m bench.target_rotation
	$(PY) -m bench.revocation_flow
	$(PY) -m bench.inventory

clean:
	rm -rf $(VENV) node_modules .local .pytest_cache .mypy_cache .ruff_cache
