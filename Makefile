# The two commands of the README. Both create the virtual environment when it is missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: run test fault-suite lint install chromium

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/arflow run

# Debian's Chromium for the browser tests (tests/test_web.py; Playwright's own browser
# download cannot work here). Installed when missing, as root; where that fails outside CI
# the browser tests are skipped, and in CI (CI set) they fail.
chromium:
	@command -v chromium >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y --no-install-recommends chromium) || { test -z "$$CI" && \
		echo "chromium could not be installed: the browser tests will be skipped"; }

test: $(STAMP) chromium
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/pytest -q

# The fault suite (tests/faults/: SIGKILLs the worker and the Temporal dev server while 1,000
# invoices' reminders fall due; about 10 minutes). Skipped by `make test`. SQLite only: the
# faults are in the processes around the database, and a second 10-minute run on PostgreSQL
# would double CI's time for little. ARFLOW_FAULT_INVOICES and ARFLOW_FAULT_SEED vary the run.
fault-suite: $(STAMP)
	ARFLOW_FAULT_SUITE=1 ARFLOW_TEST_DATABASES=sqlite $(VENV)/bin/pytest -q -s -m fault tests/faults
