# The two commands of the README:
#   make run   - run the service locally (Azurite + Key Vault emulator + the app) until Ctrl-C
#   make test  - lint, type-check, checkov on infra/, and run every test tier (unit, functions, integration)
# Both install what is missing first: a venv with requirements-dev.txt, and Azurite from package-lock.json.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP_PY  := $(VENV)/.installed
STAMP_NPM := node_modules/.installed
# checkov lives in a venv of its own inside .venv (its dependencies stay out of the app's).
CHECKOV_VENV  := $(VENV)/checkov
STAMP_CHECKOV := $(CHECKOV_VENV)/.installed

.PHONY: install postgres-server browser run peers test lint typecheck checkov pytest unit functions integration bench clean

# What make run needs; the tests also need PostgreSQL's server binaries (postgres-server).
install: $(STAMP_PY) $(STAMP_NPM)

# The PostgreSQL rotators' integration tests start a throwaway cluster from the server binaries, found by
# devtools/postgres.py (PG_BIN, Debian's /usr/lib/postgresql/*/bin, Homebrew's opt/postgresql@*/bin, PATH).
# Missing on Debian as root: Debian's postgresql package is installed; elsewhere the error says how.
postgres-server: $(STAMP_PY)
	@$(PY) -m devtools.postgres >/dev/null 2>&1 || { \
		[ -z "$$PG_BIN" ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] || { $(PY) -m devtools.postgres; exit 1; }; \
		echo "PostgreSQL server binaries missing: installing Debian's postgresql package"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql; }

# The compliance report's page is rendered in headless Chromium by a test (devtools/browser.py finds it:
# CHROMIUM, Debian's chromium, chromium-browser or google-chrome on PATH, Google Chrome on macOS).
# Missing on Debian as root: Debian's chromium package is installed; elsewhere the error says how.
browser: $(STAMP_PY)
	@$(PY) -m devtools.browser >/dev/null 2>&1 || { \
		[ -z "$$CHROMIUM" ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] || { $(PY) -m devtools.browser; exit 1; }; \
		echo "Chromium missing: installing Debian's chromium package"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; }

$(STAMP_PY): requirements.txt requirements-dev.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements-dev.txt
	$(PY) -m pip install --disable-pip-version-check -q --no-deps -e .
	@touch $@

$(STAMP_CHECKOV): requirements-checkov.txt
	@test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --disable-pip-version-check -q -r requirements-checkov.txt
	@touch $@

$(STAMP_NPM): package.json package-lock.json
	@command -v npm >/dev/null || { echo "npm (Node.js 20+) is required for Azurite: install Node.js 20" >&2; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

run: install
	$(PY) -m devtools.stack

# The local peers alone, their settings written into local.settings.json: then `func start` yourself.
peers: install
	$(PY) -m devtools.stack --peers-only

lint: $(STAMP_PY)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP_PY)
	$(VENV)/bin/mypy --strict shared bench deploy lifecycle_cli

# The Bicep against checkov's rules, offline (--skip-download): 0 failures. A false positive is skipped
# inline in the .bicep file, with the reason a security reviewer reads (docs/deploy.md lists them).
checkov: $(STAMP_CHECKOV)
	$(CHECKOV_VENV)/bin/checkov --directory infra --framework bicep --quiet --compact --skip-download

# pytest exits 5 when it collected no test: make treats that as a failure, as it should.
pytest: install postgres-server browser
	$(PY) -m pytest

test: lint typecheck checkov pytest

unit: $(STAMP_PY)
	$(PY) -m pytest tests/unit

functions: $(STAMP_PY)
	$(PY) -m pytest tests/functions

integration: install postgres-server browser
	$(PY) -m pytest tests/integration

# Benchmarks print their figures next to a baseline measured in the same run (docs/benchmarks.md); every
# one but compliance_report (its 200,000 records take about 20 minutes to write: run it alone).
bench: install postgres-server
	$(PY) -m bench.audit_append
	$(PY) -m bench.audit_contention
	$(PY) -m bench.audit_query
	$(PY) -m bench.audit_digest
	$(PY) -m bench.sweep
	$(PY) -m bench.target_rotation
	$(PY) -m bench.revocation_flow
	$(PY) -m bench.inventory
	$(PY) -m bench.cold_start
	$(PY) -m bench.scale_out
	$(PY) -m bench.http_load
	$(PY) -m bench.http_load --kill-every 10

clean:
	rm -rf $(VENV) node_modules .local .pytest_cache .mypy_cache .ruff_cache *.egg-info test-artifacts
